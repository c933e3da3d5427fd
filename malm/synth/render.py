"""Render one synthetic dish photo (numpy + PIL) with per-ingredient ground-truth boxes.

An image is drawn at twice the output side (``base``) and box-downsampled: table -> vessel (bowl,
plate, board, glass, tray, pan) with its base (broth, sauce, dough) -> ingredient pieces in the dish's
layout -> sauce drizzles (occlusion) -> downsample -> lighting / colour jitter -> pixel noise.
An ingredient is a group of pieces of its shape filled with its texture; a label map records which
ingredient owns each pixel, giving each ingredient's visible box and visible fraction.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from malm.synth.vocab import SIZES, TABLES, VESSEL_COLORS, Dish

Region = tuple  # ("circle", cx, cy, r) or ("rect", x0, y0, x1, y1), in base pixels
Piece = tuple   # (shape, cx, cy, radius, angle, aspect)

_TRIANGLE = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
_POLYGONS = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(1.1 * math.cos(a), 1.1 * math.sin(a)) for a in _TRIANGLE],
    "diamond": [(1.0, 0.0), (0.0, 0.55), (-1.0, 0.0), (0.0, -0.55)],
    "stick": [(-1.0, -0.28), (1.0, -0.28), (1.0, 0.28), (-1.0, 0.28)],
    "leaf": [(math.cos(t), 0.45 * math.sin(t) * math.sqrt(abs(math.sin(t))))
             for t in np.linspace(0, 2 * math.pi, 14, endpoint=False)],
    "star": [((1.0 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5 - math.pi / 2),
              (1.0 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5 - math.pi / 2)) for i in range(10)],
}
_PIECES = {"s": (6, 10), "m": (3, 5), "l": (1, 3)}  # pieces per ingredient group, by piece size
_TABLE_KINDS = ("wood", "cloth", "marble", "linen", "slate")


@dataclass(frozen=True)
class Look:
    """Visual signature of one ingredient (after look-alike perturbation)."""
    color: tuple[int, int, int]
    color2: tuple[int, int, int]
    texture: str
    shape: str
    size: str
    pattern: int  # seed key of the texture map (shared by a look-alike pair)


def _rgb(h: str) -> np.ndarray:
    return np.array([int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)], np.float32)


def _tuple(c: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(c, 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    small = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(small.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def _radius(region: Region) -> float:
    return region[3] if region[0] == "circle" else min(region[3] - region[1], region[4] - region[2]) / 2


def _point(rng: np.random.Generator, region: Region, frac: float = 1.0) -> tuple[float, float]:
    """Uniform point in the central ``frac`` of a region."""
    if region[0] == "circle":
        _, cx, cy, r = region
        rad, t = r * frac * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        return cx + rad * math.cos(t), cy + rad * math.sin(t)
    _, x0, y0, x1, y1 = region
    mx, my = (x1 - x0) * (1 - frac) / 2, (y1 - y0) * (1 - frac) / 2
    return rng.uniform(x0 + mx, x1 - mx), rng.uniform(y0 + my, y1 - my)


def _draw_piece(draw: ImageDraw.ImageDraw, piece: Piece, rng: np.random.Generator) -> None:
    shape, cx, cy, s, ang, asp = piece
    box = [cx - s, cy - s * asp, cx + s, cy + s * asp]
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, outline=255, width=max(1, round(s * 0.4)))
    elif shape == "half":
        draw.pieslice(box, math.degrees(ang), math.degrees(ang) + 180, fill=255)
    elif shape == "band":
        draw.rounded_rectangle(box, radius=s * asp * 0.7, fill=255)
    else:
        pts = _POLYGONS.get(shape)
        if pts is None:  # blob: a new random outline per piece
            ts = np.linspace(0, 2 * math.pi, 9, endpoint=False)
            pts = [(math.cos(t) * q, math.sin(t) * q) for t, q in zip(ts, rng.uniform(0.7, 1.15, 9))]
        c, sn = math.cos(ang), math.sin(ang)
        draw.polygon([(cx + s * (x * c - y * sn * asp), cy + s * (x * sn + y * c * asp)) for x, y in pts],
                     fill=255)


class Renderer:
    """Draws dish images of side ``image_size``; texture and table maps are cached per process."""

    def __init__(self, looks: list[Look], image_size: int, noise: float, color_jitter: float,
                 occlusion: float, seed: int, piece_scale: float = 1.0):
        self.looks, self.size, self.base = looks, image_size, 2 * image_size
        self.piece_scale = piece_scale
        self.noise, self.jitter, self.occlusion, self.seed = noise, color_jitter, occlusion, seed
        self.u = self.base / 128.0  # length unit: 1 at the default 64 px output
        self._pad = self.base // 2  # maps are larger than the image: random crops vary them
        self._patterns: dict[int, np.ndarray] = {}
        self._tables: dict[tuple[str, int], np.ndarray] = {}
        gy, gx = np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size - 0.5
        self._gy, self._gx = gy, gx

    # ------------------------------------------------------------------------------ textures
    def pattern(self, key: int, texture: str) -> np.ndarray:
        """Texture map (uint8, 0 = colour, 255 = colour2) of side base + pad, fixed per (seed, key)."""
        if key in self._patterns:
            return self._patterns[key]
        rng = np.random.default_rng([self.seed, 7, key])
        n, u = self.base + self._pad, self.u
        y, x = np.mgrid[0:n, 0:n].astype(np.float32)
        th = rng.uniform(0, math.pi)
        a, b = x * math.cos(th) + y * math.sin(th), -x * math.sin(th) + y * math.cos(th)
        if texture == "stripes":
            p = (np.sin(2 * math.pi * a / (rng.uniform(6, 10) * u)) > 0).astype(np.float32)
        elif texture == "dots":
            per = rng.uniform(7, 11) * u
            da, db = (a % per) - per / 2, (b % per) - per / 2
            p = (da ** 2 + db ** 2 < (0.3 * per) ** 2).astype(np.float32)
        elif texture == "checker":
            per = rng.uniform(5, 8) * u
            p = ((np.floor(a / per) + np.floor(b / per)) % 2).astype(np.float32)
        elif texture == "noise":
            p = np.clip((_value_noise(rng, n, max(2, int(n / (5 * u)))) - 0.5) * 2.5 + 0.5, 0, 1)
        elif texture == "speckle":
            cells = max(2, int(n / (1.5 * u)))
            grid = (rng.random((cells, cells)) < 0.18).astype(np.uint8) * 255
            p = np.asarray(Image.fromarray(grid).resize((n, n), Image.NEAREST), np.float32) / 255.0
        else:  # solid: faint low-frequency shading only
            p = 0.15 * _value_noise(rng, n, 3)
        self._patterns[key] = (p * 255).astype(np.uint8)
        return self._patterns[key]

    def _table_map(self, kind: str, variant: int) -> np.ndarray:
        """Background pattern in [0, 1] of side base + pad, fixed per (seed, kind, variant)."""
        if (kind, variant) not in self._tables:
            rng = np.random.default_rng([self.seed, 8, _TABLE_KINDS.index(kind), variant])
            u, n = self.u, self.base + self._pad
            y, x = np.mgrid[0:n, 0:n].astype(np.float32)
            if kind == "wood":
                per = rng.uniform(6, 12) * u
                t = (np.sin(2 * math.pi * (y + 3 * u * np.sin(x / (rng.uniform(8, 16) * u))) / per) + 1) / 2
            elif kind == "cloth":
                per = rng.uniform(12, 20) * u
                t = (np.floor(x / per) + np.floor(y / per)) % 2
            elif kind == "marble":
                t = (np.abs(_value_noise(rng, n, 7) - 0.5) < 0.04).astype(np.float32)
            elif kind == "linen":
                t = (np.sin(x * 1.7 / u) * np.sin(y * 1.7 / u) + 1) / 2
            else:
                t = _value_noise(rng, n, 12)
            self._tables[kind, variant] = t.astype(np.float32)
        return self._tables[kind, variant]

    def _table(self, rng: np.random.Generator) -> Image.Image:
        kind, h1, h2 = TABLES[int(rng.integers(len(TABLES)))]
        shift = rng.normal(0, self.jitter * 255, 3).astype(np.float32)
        c1, c2 = _rgb(h1) + shift, _rgb(h2) + shift
        ox, oy = (int(v) for v in rng.integers(0, self._pad, 2))
        t = self._table_map(kind, int(rng.integers(4)))[oy:oy + self.base, ox:ox + self.base, None]
        return Image.fromarray(np.clip(c1 + (c2 - c1) * t, 0, 255).astype(np.uint8))

    def _fill(self, img: Image.Image, mask: Image.Image, rng: np.random.Generator, look: Look):
        """Paste the textured ingredient through ``mask`` over a soft drop shadow.
        Returns (bbox, boolean mask crop), or None when nothing was drawn."""
        bbox = mask.getbbox()
        if bbox is None:
            return None
        x0, y0, x1, y1 = bbox
        shift = rng.normal(0, self.jitter * 255, 3).astype(np.float32)
        c1 = np.asarray(look.color, np.float32) + shift
        c2 = np.asarray(look.color2, np.float32) + shift
        ox, oy = (int(v) for v in rng.integers(0, self._pad, 2))
        p = self.pattern(look.pattern, look.texture)[oy + y0:oy + y1, ox + x0:ox + x1, None]
        tex = np.clip(c1 + (c2 - c1) * (p * np.float32(1 / 255)), 0, 255).astype(np.uint8)
        crop = mask.crop(bbox)
        m = np.asarray(crop)
        d = max(1, round(1.5 * self.u))
        img.paste((25, 18, 12), (x0 + d, y0 + d, x1 + d, y1 + d), Image.fromarray((m >> 2) + (m >> 4)))
        img.paste(Image.fromarray(tex), (x0, y0), crop)
        return bbox, m > 127

    # -------------------------------------------------------------------------------- vessel
    def _vessel(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, dish: Dish,
                base: np.ndarray) -> Region:
        """Draw the vessel and the base (broth / sauce pool); return the region that holds the food."""
        n, u = self.base, self.u
        cx, cy = n / 2 + rng.uniform(-0.04, 0.04, 2) * n
        r = n * rng.uniform(0.40, 0.46)
        vcol = _rgb(VESSEL_COLORS[int(rng.integers(len(VESSEL_COLORS)))]) + rng.normal(0, 8, 3)
        rim, dark, b = _tuple(vcol), _tuple(vcol * 0.8), _tuple(base)
        w1, w2 = max(1, round(u)), max(1, round(2 * u))
        if dish.vessel == "glass":
            w, h = r * rng.uniform(0.55, 0.7), r * 0.95
            draw.rounded_rectangle([cx - w, cy - h, cx + w, cy + h], radius=3 * u, fill=(225, 232, 236),
                                   outline=(190, 200, 205), width=w2)
            return ("rect", cx - w + 2 * u, cy - h + 4 * u, cx + w - 2 * u, cy + h - 2 * u)
        if dish.vessel in ("tray", "board"):
            w, h = r * rng.uniform(1.0, 1.1), r * rng.uniform(0.8, 0.95)
            col = rim if dish.vessel == "tray" else _tuple(_rgb("#b8864b") + rng.normal(0, 10, 3))
            draw.rounded_rectangle([cx - w, cy - h, cx + w, cy + h], radius=6 * u, fill=col, outline=dark,
                                   width=w2)
            inner = ("rect", cx - w + 5 * u, cy - h + 5 * u, cx + w - 5 * u, cy + h - 5 * u)
            if dish.vessel == "tray" and dish.layout == "scattered":
                draw.rectangle(list(inner[1:]), fill=b)
            if dish.layout in ("grid", "layered", "scattered", "stacked"):
                return inner
            return ("circle", cx, cy, h * 0.95)
        if dish.vessel == "pan":
            ang = rng.uniform(0, 2 * math.pi)
            draw.line([cx, cy, cx + math.cos(ang) * r * 1.6, cy + math.sin(ang) * r * 1.6], fill=(40, 40, 40),
                      width=max(2, round(7 * u)))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(45, 45, 48))
            ri = r * 0.88
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri],
                         fill=b if dish.layout == "scattered" else (60, 60, 62))
            return ("circle", cx, cy, ri * 0.95)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rim, outline=dark, width=w1)  # bowl or plate
        ri = r * (0.84 if dish.vessel == "bowl" else 0.9)
        if dish.vessel == "bowl":
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=b, outline=_tuple(base * 0.8), width=w2)
        else:
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], outline=dark, width=w1)
            if dish.layout in ("pile", "scattered", "ring"):  # sauce pool
                ts, ss = np.linspace(0, 2 * math.pi, 11, endpoint=False), rng.uniform(0.6, 0.8, 11)
                draw.polygon([(cx + math.cos(t) * ri * s, cy + math.sin(t) * ri * s) for t, s in zip(ts, ss)],
                             fill=b)
        return ("circle", cx, cy, ri * 0.92)

    # ------------------------------------------------------------------------------- layouts
    # Each returns the pieces of every ingredient (in ``looks`` order) and may draw props first.
    def _group(self, rng: np.random.Generator, look: Look, centre, spread: float, scale: float = 1.0,
               extra: float = 1.0) -> list[Piece]:
        """A group of pieces of one ingredient within ``spread`` of ``centre``."""
        lo, hi = _PIECES[look.size]
        k = max(1, round(int(rng.integers(lo, hi + 1)) * extra))
        s0 = SIZES[look.size] * self.base * scale * self.piece_scale
        rad, t, size, ang, asp = rng.random((5, k))
        rad, t = spread * np.sqrt(rad), 2 * math.pi * t
        xs, ys = centre[0] + rad * np.cos(t), centre[1] + rad * np.sin(t)
        cols = (xs, ys, s0 * (0.75 + 0.5 * size), 2 * math.pi * ang, 0.8 + 0.2 * asp)
        return [(look.shape, *vals) for vals in zip(*(c.tolist() for c in cols))]

    def _lay_scattered(self, draw, rng, dish, region, looks, base):
        # best-candidate sampling of group centres: fewer candidates (more occlusion) -> more overlap
        r, tries, centres = _radius(region), 1 + round(8 * (1 - self.occlusion)), []
        for _ in looks:
            cands = [_point(rng, region, 0.75) for _ in range(tries)]
            centres.append(max(cands, key=lambda c: min((math.dist(c, o) for o in centres), default=0.0)))
        return [self._group(rng, lk, c, r * (0.18 + 0.15 * self.occlusion)) for lk, c in zip(looks, centres)]

    def _lay_pile(self, draw, rng, dish, region, looks, base):
        r = _radius(region)
        return [self._group(rng, lk, _point(rng, region, 0.45), r * (0.22 + 0.1 * self.occlusion))
                for lk in looks]

    def _lay_ring(self, draw, rng, dish, region, looks, base):
        r, k = _radius(region), len(looks)
        t0, rr = rng.uniform(0, 2 * math.pi), r * rng.uniform(0.5, 0.6)
        cx, cy = (region[1], region[2]) if region[0] == "circle" else _point(rng, region, 0.0)
        out = []
        for i, lk in enumerate(looks):
            t = t0 + 2 * math.pi * i / k
            c = (cx + rr * math.cos(t + rng.normal(0, 0.1)), cy + rr * math.sin(t + rng.normal(0, 0.1)))
            out.append(self._group(rng, lk, c, r * (0.14 + 0.1 * self.occlusion)))
        return out

    def _lay_topping(self, draw, rng, dish, region, looks, base):
        """A disc of dough / batter / egg with a crust or browned edge; groups spread over it."""
        cx, cy = _point(rng, region, 0.1)
        rd = _radius(region) * 0.95
        rim = _rgb("#d29b55") if dish.method == "bake" else base * 0.78
        draw.ellipse([cx - rd, cy - rd, cx + rd, cy + rd], fill=_tuple(rim + rng.normal(0, 8, 3)))
        draw.ellipse([cx - rd * 0.86, cy - rd * 0.86, cx + rd * 0.86, cy + rd * 0.86], fill=_tuple(base))
        disc = ("circle", cx, cy, rd * 0.8)
        return [self._group(rng, lk, _point(rng, disc, 0.5), rd * (0.3 + 0.1 * self.occlusion), extra=1.5)
                for lk in looks]

    def _lay_grid(self, draw, rng, dish, region, looks, base):
        """Units (sushi pieces, cookies, tacos) in a grid; each ingredient tops some of them."""
        k, r = len(looks), _radius(region)
        rows, cols = (2, 2) if k <= 4 else (2, 3) if k <= 6 else (math.ceil(math.sqrt(k)),) * 2
        if region[0] == "circle":
            region = ("rect", region[1] - r * 0.75, region[2] - r * 0.75, region[1] + r * 0.75,
                      region[2] + r * 0.75)
        _, x0, y0, x1, y1 = region
        pw, ph = (x1 - x0) / cols, (y1 - y0) / rows
        ur = 0.42 * min(pw, ph)
        cells = [(x0 + (c + 0.5) * pw, y0 + (q + 0.5) * ph) for q in range(rows) for c in range(cols)]
        for cx, cy in cells:
            draw.ellipse([cx - ur, cy - ur, cx + ur, cy + ur], fill=_tuple(base), outline=_tuple(base * 0.75),
                         width=max(1, round(2 * self.u)))
        pieces: list[list[Piece]] = [[] for _ in range(k)]
        for j, cell in enumerate(rng.permutation(len(cells)).tolist()):
            pieces[j % k] += self._group(rng, looks[j % k], cells[cell], ur * 0.55, scale=0.8, extra=0.6)
        return pieces

    def _lay_skewer(self, draw, rng, dish, region, looks, base):
        """2-3 parallel skewers; ingredients alternate along them."""
        k, r = len(looks), _radius(region)
        th, n_st = rng.uniform(0, math.pi), int(rng.integers(2, 4))
        slots = max(5, math.ceil(k / n_st))
        cx, cy = _point(rng, region, 0.1)
        dx, dy = math.cos(th), math.sin(th)
        pieces: list[list[Piece]] = [[] for _ in range(k)]
        j = int(rng.integers(k))
        for st in range(n_st):
            off = (st - (n_st - 1) / 2) * r * 0.5
            sx, sy = cx - dy * off, cy + dx * off
            draw.line([sx - dx * r * 0.95, sy - dy * r * 0.95, sx + dx * r * 0.95, sy + dy * r * 0.95],
                      fill=(176, 136, 80), width=max(1, round(2 * self.u)))
            for q in range(slots):
                t, lk = (q - (slots - 1) / 2) * r * 1.7 / slots, looks[j % k]
                pieces[j % k].append((lk.shape, sx + dx * t, sy + dy * t, r * 0.15 * rng.uniform(0.85, 1.1),
                                      rng.uniform(0, 2 * math.pi), rng.uniform(0.85, 1.0)))
                j += 1
        return pieces

    def _lay_stacked(self, draw, rng, dish, region, looks, base):
        """Side views: 'stacked' (burger, sandwich, cake) and 'layered' (glass, lasagna): one band per
        ingredient between base bands (bread, bun, sponge, yogurt, pasta)."""
        k = len(looks)
        if region[0] == "circle":
            _, cx, cy, r = region
            x0, x1, y0, y1 = cx - r * 0.85, cx + r * 0.85, cy - r * 0.7, cy + r * 0.7
        else:
            _, x0, y0, x1, y1 = region
        layered = dish.layout == "layered"
        interleave = layered or dish.name == "cake"
        kinds: list = ["base"]
        for i in range(k):
            kinds += [i, "base"] if interleave and i < k - 1 else [i]
        kinds.append("base")
        h, cx, bw = (y1 - y0) / len(kinds), (x0 + x1) / 2, (x1 - x0) / 2
        pieces: list[list[Piece]] = [[] for _ in range(k)]
        for q, kind in enumerate(kinds):
            yc = y0 + (q + 0.5) * h
            w = bw * (1.0 if layered else rng.uniform(0.8, 1.0))
            if kind == "base":
                hh = h * (0.45 if interleave else 0.6)
                draw.rounded_rectangle([cx - w, yc - hh, cx + w, yc + hh], radius=hh * 0.8, fill=_tuple(base),
                                       outline=_tuple(base * 0.75), width=max(1, round(self.u)))
                continue
            lk = looks[kind]
            pieces[kind].append(("band", cx, yc, w, 0.0, h * 0.5 / w))
            for _ in range(int(rng.integers(1, 4))):  # loose pieces show the shape signature
                px = cx + rng.choice([-1, 1]) * w * rng.uniform(0.6, 1.0)
                pieces[kind].append((lk.shape, px, yc, SIZES[lk.size] * self.base * 0.9,
                                     rng.uniform(0, 2 * math.pi), 1.0))
        return pieces

    _lay_layered = _lay_stacked

    # ------------------------------------------------------------------------------ the image
    def _drizzle(self, img: Image.Image, rng: np.random.Generator, region: Region, base: np.ndarray,
                 labels: np.ndarray) -> None:
        """1-3 sauce or cream lines over the food: they hide ingredient pixels (label -1)."""
        mask = Image.new("L", img.size, 0)
        md = ImageDraw.Draw(mask)
        r = _radius(region)
        for _ in range(int(rng.integers(1, 4))):
            p = _point(rng, region, 0.7)
            pts = [p]
            for _ in range(int(rng.integers(3, 7))):
                p = (p[0] + rng.normal(0, r * 0.3), p[1] + rng.normal(0, r * 0.3))
                pts.append(p)
            md.line(pts, fill=255, width=max(1, round(rng.uniform(1.5, 4) * self.u)), joint="curve")
        col = base * rng.uniform(0.5, 0.8) if rng.random() < 0.5 else _rgb("#f7f3e8")
        img.paste(_tuple(col + rng.normal(0, 10, 3)), (0, 0), mask)
        labels[np.asarray(mask) > 127] = -1

    def _finish(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Downsample; lighting gradient, white balance and brightness jitter; pixel noise."""
        a = rng.uniform(0, 2 * math.pi)
        grad = (self._gx * math.cos(a) + self._gy * math.sin(a)) * rng.uniform(0, 0.3)
        gain = ((1 + rng.normal(0, self.jitter)) * (1 + rng.normal(0, self.jitter / 2, 3))).astype(np.float32)
        arr = np.asarray(img.reduce(2), np.float32) * (1 + grad)[..., None] * gain
        if self.noise > 0:
            arr += rng.normal(0, self.noise * 255, arr.shape).astype(np.float32)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))

    def render(self, rng: np.random.Generator, dish: Dish, base_hex: str, ingredients: list[int],
               quality: int = 90) -> tuple[bytes, list[tuple[int, list[int], float]]]:
        """One image: (JPEG bytes, truth). Truth has one (ingredient index, box, visible fraction) per
        drawn ingredient; the box ``[x0, y0, x1, y1]`` (output pixels, x1/y1 exclusive) bounds its
        visible pixels (its drawn pixels when fully hidden)."""
        img = self._table(rng)
        draw = ImageDraw.Draw(img)
        base = _rgb(base_hex) + rng.normal(0, self.jitter * 255, 3).astype(np.float32)
        region = self._vessel(draw, rng, dish, base)
        order = list(ingredients)
        if dish.layout not in ("stacked", "layered"):
            order = [order[i] for i in rng.permutation(len(order)).tolist()]
        looks = [self.looks[i] for i in order]
        pieces = getattr(self, f"_lay_{dish.layout}")(draw, rng, dish, region, looks, base)
        labels = np.full((self.base, self.base), -1, np.int16)
        drawn: dict[int, tuple] = {}
        for j, (lk, ps) in enumerate(zip(looks, pieces)):
            mask = Image.new("L", img.size, 0)
            md = ImageDraw.Draw(mask)
            for p in ps:
                _draw_piece(md, p, rng)
            filled = self._fill(img, mask, rng, lk)
            if filled is not None:
                (x0, y0, x1, y1), m = filled
                labels[y0:y1, x0:x1][m] = j
                drawn[j] = (filled[0], int(m.sum()))
        if rng.random() < self.occlusion:
            self._drizzle(img, rng, region, base, labels)
        buf = io.BytesIO()
        self._finish(img, rng).save(buf, "JPEG", quality=quality)
        return buf.getvalue(), self._truth(order, drawn, labels)

    def _truth(self, order: list[int], drawn: dict[int, tuple], labels: np.ndarray) -> list:
        out = []
        for j, ing in enumerate(order):
            if j not in drawn:
                continue
            (x0, y0, x1, y1), area = drawn[j]
            ys, xs = np.nonzero(labels[y0:y1, x0:x1] == j)
            if len(xs):
                x0, x1 = x0 + int(xs.min()), x0 + int(xs.max()) + 1
                y0, y1 = y0 + int(ys.min()), y0 + int(ys.max()) + 1
            box = [x0 // 2, y0 // 2, min(self.size, (x1 + 1) // 2), min(self.size, (y1 + 1) // 2)]
            out.append((ing, box, round(len(xs) / max(area, 1), 3)))
        return out
