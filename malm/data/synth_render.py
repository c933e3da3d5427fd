"""Render one synthetic dish photo (numpy + PIL) with per-ingredient ground-truth boxes.

An image is drawn at twice the output side (``base``), then box-downsampled: table background ->
vessel (bowl, plate, board, glass, tray, pan) -> base (broth, sauce, dough) -> ingredient pieces in the
dish's layout -> sauce drizzles (occlusion) -> lighting and colour jitter -> downsample -> pixel noise.
Every ingredient is a group of pieces of its shape filled with its texture; a label map tracks which
ingredient owns each pixel, giving the visible box and visible fraction of each ingredient.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from malm.data.synth_vocab import SIZES, TABLES, VESSEL_COLORS, Dish

Region = tuple  # ("circle", cx, cy, r) or ("rect", x0, y0, x1, y1)
Piece = tuple   # (shape, cx, cy, s, angle, aspect)

_POLYGONS = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(1.1 * math.cos(a), 1.1 * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)],
    "diamond": [(1.0, 0.0), (0.0, 0.55), (-1.0, 0.0), (0.0, -0.55)],
    "stick": [(-1.0, -0.28), (1.0, -0.28), (1.0, 0.28), (-1.0, 0.28)],
    "leaf": [(math.cos(t), 0.45 * math.sin(t) * math.sqrt(abs(math.sin(t))))
             for t in np.linspace(0, 2 * math.pi, 14, endpoint=False)],
    "star": [((1.0 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5 - math.pi / 2),
              (1.0 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5 - math.pi / 2)) for i in range(10)],
}
_PIECES = {"s": (6, 10), "m": (3, 5), "l": (1, 3)}  # pieces per ingredient cluster, by piece size
_SHADOW_LUT = [int(v * 0.35) for v in range(256)]


@dataclass(frozen=True)
class Look:
    """Visual signature of one ingredient (after look-alike perturbation)."""
    color: tuple[int, int, int]
    color2: tuple[int, int, int]
    texture: str
    shape: str
    size: str
    pattern: int  # seed key of the texture map (shared by look-alike pairs)


def _rgb(h: str) -> np.ndarray:
    return np.array([int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)], np.float32)


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    small = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(small.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def _tuple(c: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(c, 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


class Renderer:
    """Draws dish images of side ``image_size``; texture maps are cached per ingredient."""

    def __init__(self, looks: list[Look], image_size: int, noise: float, color_jitter: float,
                 occlusion: float, seed: int):
        self.looks, self.size, self.base = looks, image_size, 2 * image_size
        self.noise, self.jitter, self.occlusion, self.seed = noise, color_jitter, occlusion, seed
        self.u = self.base / 128.0  # length unit: 1 at the default 64 px output
        self._patterns: dict[int, np.ndarray] = {}
        self._pad = self.base // 2
        yy, xx = np.mgrid[0:self.base, 0:self.base].astype(np.float32)
        self._yy, self._xx = yy, xx

    # ------------------------------------------------------------------------------ textures
    def pattern(self, key: int, texture: str) -> np.ndarray:
        """Texture map in [0, 255] (uint8) of side base + pad, fixed per (seed, key)."""
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
            p = (((a % per) - per / 2) ** 2 + ((b % per) - per / 2) ** 2 < (0.3 * per) ** 2).astype(np.float32)
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
        out = (p * 255).astype(np.uint8)
        self._patterns[key] = out
        return out

    def _fill(self, img: Image.Image, mask: Image.Image, rng: np.random.Generator, look: Look):
        """Paste the textured ingredient through ``mask`` (with a soft drop shadow); return its bbox."""
        bbox = mask.getbbox()
        if bbox is None:
            return None
        x0, y0, x1, y1 = bbox
        shift = rng.normal(0, self.jitter * 255, 3).astype(np.float32)
        c1 = np.asarray(look.color, np.float32) + shift
        c2 = np.asarray(look.color2, np.float32) + shift
        ox, oy = (int(v) for v in rng.integers(0, self._pad, 2))
        p = self.pattern(look.pattern, look.texture)[oy + y0:oy + y1, ox + x0:ox + x1, None] / np.float32(255)
        tex = np.clip(c1 + (c2 - c1) * p, 0, 255).astype(np.uint8)
        crop = mask.crop(bbox)
        d = max(1, round(1.5 * self.u))
        img.paste((25, 18, 12), (x0 + d, y0 + d, x1 + d, y1 + d), crop.point(_SHADOW_LUT))
        img.paste(Image.fromarray(tex), (x0, y0), crop)
        return bbox

    # ---------------------------------------------------------------------------- background
    def _table(self, rng: np.random.Generator) -> Image.Image:
        kind, h1, h2 = TABLES[int(rng.integers(len(TABLES)))]
        shift = rng.normal(0, self.jitter * 255, 3).astype(np.float32)
        c1, c2 = _rgb(h1) + shift, _rgb(h2) + shift
        x, y, u, n = self._xx, self._yy, self.u, self.base
        if kind == "wood":
            per = rng.uniform(6, 12) * u
            t = (np.sin(2 * math.pi * (y + 3 * u * np.sin(x / (rng.uniform(8, 16) * u))) / per) + 1) / 2
        elif kind == "cloth":
            per = rng.uniform(12, 20) * u
            t = ((np.floor(x / per) + np.floor(y / per)) % 2).astype(np.float32)
        elif kind == "marble":
            t = (np.abs(_value_noise(rng, n, 5) - 0.5) < 0.04).astype(np.float32)
        elif kind == "linen":
            t = (np.sin(x * 1.7 / u) * np.sin(y * 1.7 / u) + 1) / 2
        else:
            t = _value_noise(rng, n, 8)
        arr = c1 + (c2 - c1) * t[..., None]
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))

    def _vessel(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, dish: Dish, base: np.ndarray) -> Region:
        """Draw vessel and base (broth / sauce / dough); return the region that holds the food."""
        n, u = self.base, self.u
        cx, cy = (n / 2 + rng.uniform(-0.04, 0.04, 2) * n)
        r = n * rng.uniform(0.40, 0.46)
        vcol = _rgb(VESSEL_COLORS[int(rng.integers(len(VESSEL_COLORS)))]) + rng.normal(0, 8, 3)
        rim, dark, b = _tuple(vcol), _tuple(vcol * 0.8), _tuple(base)
        bdark = _tuple(base * 0.8)
        if dish.vessel == "glass":
            w, h = r * rng.uniform(0.55, 0.7), r * 0.95
            draw.rounded_rectangle([cx - w, cy - h, cx + w, cy + h], radius=3 * u, fill=(225, 232, 236),
                                   outline=(190, 200, 205), width=max(1, round(2 * u)))
            return ("rect", cx - w + 2 * u, cy - h + 4 * u, cx + w - 2 * u, cy + h - 2 * u)
        if dish.vessel in ("tray", "board"):
            w, h = r * rng.uniform(1.0, 1.1), r * rng.uniform(0.8, 0.95)
            col = rim if dish.vessel == "tray" else _tuple(_rgb("#b8864b") + rng.normal(0, 10, 3))
            draw.rounded_rectangle([cx - w, cy - h, cx + w, cy + h], radius=6 * u, fill=col, outline=dark,
                                   width=max(1, round(2 * u)))
            inner = ("rect", cx - w + 5 * u, cy - h + 5 * u, cx + w - 5 * u, cy + h - 5 * u)
            if dish.vessel == "tray" and dish.layout == "scattered":
                draw.rectangle(list(inner[1:]), fill=b)
            return inner if dish.layout in ("grid", "layered", "scattered", "stacked") else ("circle", cx, cy, h * 0.95)
        if dish.vessel == "pan":
            ang = rng.uniform(0, 2 * math.pi)
            hx, hy = cx + math.cos(ang) * r * 1.6, cy + math.sin(ang) * r * 1.6
            draw.line([cx, cy, hx, hy], fill=(40, 40, 40), width=max(2, round(7 * u)))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(45, 45, 48))
            ri = r * 0.88
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=b if dish.layout == "scattered" else (60, 60, 62))
            return ("circle", cx, cy, ri * 0.95)
        # bowl or plate
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rim, outline=dark, width=max(1, round(u)))
        ri = r * (0.84 if dish.vessel == "bowl" else 0.9)
        if dish.vessel == "bowl":
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=b, outline=bdark, width=max(1, round(2 * u)))
        else:
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], outline=dark, width=max(1, round(u)))
            if dish.layout in ("pile", "scattered", "ring"):
                pts = [(cx + math.cos(t) * ri * s, cy + math.sin(t) * ri * s) for t, s in
                       zip(np.linspace(0, 2 * math.pi, 11, endpoint=False), rng.uniform(0.6, 0.8, 11))]
                draw.polygon(pts, fill=b)
        return ("circle", cx, cy, ri * 0.92)

    # -------------------------------------------------------------------------------- layout
    @staticmethod
    def _point(rng: np.random.Generator, region: Region, frac: float = 1.0) -> tuple[float, float]:
        if region[0] == "circle":
            _, cx, cy, r = region
            rad, t = r * frac * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            return cx + rad * math.cos(t), cy + rad * math.sin(t)
        _, x0, y0, x1, y1 = region
        mx, my = (x1 - x0) * (1 - frac) / 2, (y1 - y0) * (1 - frac) / 2
        return rng.uniform(x0 + mx, x1 - mx), rng.uniform(y0 + my, y1 - my)

    def _cluster(self, rng, look: Look, centre, spread: float, scale: float = 1.0, extra: float = 1.0) -> list:
        lo, hi = _PIECES[look.size]
        k = max(1, round(int(rng.integers(lo, hi + 1)) * extra))
        s0 = SIZES[look.size] * self.base * scale
        out = []
        for _ in range(k):
            rad, t = spread * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            out.append((look.shape, centre[0] + rad * math.cos(t), centre[1] + rad * math.sin(t),
                        s0 * rng.uniform(0.75, 1.25), rng.uniform(0, 2 * math.pi), rng.uniform(0.8, 1.0)))
        return out

    @staticmethod
    def _radius(region: Region) -> float:
        return region[3] if region[0] == "circle" else min(region[3] - region[1], region[4] - region[2]) / 2

    def _layout(self, draw, rng, dish: Dish, region: Region, looks: list[Look], base: np.ndarray) -> list[list]:
        """Pieces per ingredient, in the dish's layout; draws layout props (dough, skewers, units)."""
        k, r, u, occ = len(looks), self._radius(region), self.u, self.occlusion
        lay = dish.layout
        if lay == "scattered":
            tries = 1 + round(8 * (1 - occ))  # best-candidate sampling: fewer tries -> more overlap
            centres: list[tuple[float, float]] = []
            for _ in range(k):
                cands = [self._point(rng, region, 0.75) for _ in range(tries)]
                centres.append(max(cands, key=lambda c: min((math.dist(c, o) for o in centres), default=0.0)))
            return [self._cluster(rng, lk, c, r * (0.18 + 0.15 * occ)) for lk, c in zip(looks, centres)]
        if lay == "pile":
            return [self._cluster(rng, lk, self._point(rng, region, 0.45), r * (0.22 + 0.1 * occ)) for lk in looks]
        if lay == "ring":
            t0, rr = rng.uniform(0, 2 * math.pi), r * rng.uniform(0.5, 0.6)
            cx, cy = (region[1], region[2]) if region[0] == "circle" else self._point(rng, region, 0.0)
            return [self._cluster(rng, lk, (cx + rr * math.cos(t0 + 2 * math.pi * i / k + rng.normal(0, 0.1)),
                                            cy + rr * math.sin(t0 + 2 * math.pi * i / k + rng.normal(0, 0.1))),
                                  r * (0.14 + 0.1 * occ)) for i, lk in enumerate(looks)]
        if lay == "topping":
            cx, cy = self._point(rng, region, 0.1)
            rd = r * 0.95
            rim = _rgb("#d29b55") if dish.method == "bake" else base * 0.78  # crust or browned edge
            draw.ellipse([cx - rd, cy - rd, cx + rd, cy + rd], fill=_tuple(rim + rng.normal(0, 8, 3)))
            draw.ellipse([cx - rd * 0.86, cy - rd * 0.86, cx + rd * 0.86, cy + rd * 0.86], fill=_tuple(base))
            disc = ("circle", cx, cy, rd * 0.8)
            return [self._cluster(rng, lk, self._point(rng, disc, 0.5), rd * (0.3 + 0.1 * occ), extra=1.5)
                    for lk in looks]
        if lay == "grid":
            rows, cols = (2, 2) if k <= 4 else (2, 3) if k <= 6 else (3, 3)
            if region[0] == "circle":
                region = ("rect", region[1] - r * 0.75, region[2] - r * 0.75, region[1] + r * 0.75, region[2] + r * 0.75)
            _, x0, y0, x1, y1 = region
            pw, ph = (x1 - x0) / cols, (y1 - y0) / rows
            ur = 0.42 * min(pw, ph)
            cells = [(x0 + (c + 0.5) * pw, y0 + (q + 0.5) * ph) for q in range(rows) for c in range(cols)]
            for cx, cy in cells:
                draw.ellipse([cx - ur, cy - ur, cx + ur, cy + ur], fill=_tuple(base), outline=_tuple(base * 0.75),
                             width=max(1, round(2 * u)))
            order = [int(i) for i in rng.permutation(len(cells))]
            pieces: list[list] = [[] for _ in range(k)]
            for j, cell in enumerate(order):
                i = j % k
                pieces[i] += self._cluster(rng, looks[i], cells[cell], ur * 0.55, scale=0.8, extra=0.6)
            return pieces
        if lay == "skewer":
            th, n_st = rng.uniform(0, math.pi), int(rng.integers(2, 4))
            cx, cy = self._point(rng, region, 0.1)
            dx, dy, nx, ny = math.cos(th), math.sin(th), -math.sin(th), math.cos(th)
            slots = 5
            pieces = [[] for _ in range(k)]
            j = int(rng.integers(k))
            for st in range(n_st):
                off = (st - (n_st - 1) / 2) * r * 0.5
                sx, sy = cx + nx * off, cy + ny * off
                draw.line([sx - dx * r * 0.95, sy - dy * r * 0.95, sx + dx * r * 0.95, sy + dy * r * 0.95],
                          fill=(176, 136, 80), width=max(1, round(2 * u)))
                for q in range(slots):
                    t = (q - (slots - 1) / 2) * r * 0.34
                    lk = looks[j % k]
                    pieces[j % k].append((lk.shape, sx + dx * t, sy + dy * t, r * 0.15 * rng.uniform(0.85, 1.1),
                                          rng.uniform(0, 2 * math.pi), rng.uniform(0.85, 1.0)))
                    j += 1
            return pieces
        return self._bands(draw, rng, dish, region, looks, base)

    def _bands(self, draw, rng, dish: Dish, region: Region, looks: list[Look], base: np.ndarray) -> list[list]:
        """Side views: 'stacked' (burger, sandwich, cake) or 'layered' (glass, lasagna)."""
        k, u = len(looks), self.u
        if region[0] == "circle":
            _, cx, cy, r = region
            x0, x1, y0, y1 = cx - r * 0.85, cx + r * 0.85, cy - r * 0.7, cy + r * 0.7
        else:
            _, x0, y0, x1, y1 = region
        interleave = dish.layout == "layered" or dish.name == "cake"
        kinds = ["base"] + [x for i in range(k) for x in ((i, "base") if interleave and i < k - 1 else (i,))] + ["base"]
        h = (y1 - y0) / len(kinds)
        cx, bw = (x0 + x1) / 2, (x1 - x0) / 2
        pieces: list[list] = [[] for _ in range(k)]
        for q, kind in enumerate(kinds):
            yc = y0 + (q + 0.5) * h
            w = bw * (1.0 if dish.layout == "layered" else rng.uniform(0.8, 1.0))
            if kind == "base":
                hh = h * (0.45 if interleave else 0.6)
                draw.rounded_rectangle([cx - w, yc - hh, cx + w, yc + hh], radius=hh * 0.8, fill=_tuple(base),
                                       outline=_tuple(base * 0.75), width=max(1, round(u)))
                continue
            lk = looks[kind]
            hh = h * 0.5
            pieces[kind].append(("band", cx, yc, w, 0.0, hh / w))
            for _ in range(int(rng.integers(1, 4))):  # loose pieces show the shape signature
                px = cx + rng.choice([-1, 1]) * w * rng.uniform(0.6, 1.0)
                pieces[kind].append((lk.shape, px, yc, SIZES[lk.size] * self.base * 0.9, rng.uniform(0, 2 * math.pi), 1.0))
        return pieces

    # ------------------------------------------------------------------------------- drawing
    @staticmethod
    def _piece(draw: ImageDraw.ImageDraw, piece: Piece, rng: np.random.Generator) -> None:
        shape, cx, cy, s, ang, asp = piece
        box = [cx - s, cy - s * asp, cx + s, cy + s * asp]
        if shape == "circle":
            draw.ellipse(box, fill=255)
        elif shape == "ring":
            draw.ellipse(box, outline=255, width=max(1, round(s * 0.4)))
        elif shape == "half":
            start = math.degrees(ang)
            draw.pieslice(box, start, start + 180, fill=255)
        elif shape == "band":
            draw.rounded_rectangle(box, radius=s * asp * 0.7, fill=255)
        else:
            pts = _POLYGONS.get(shape)
            if pts is None:  # blob
                ts = np.linspace(0, 2 * math.pi, 9, endpoint=False)
                pts = [(math.cos(t) * q, math.sin(t) * q) for t, q in zip(ts, rng.uniform(0.7, 1.15, 9))]
            c, sn = math.cos(ang), math.sin(ang)
            draw.polygon([(cx + s * (x * c - y * sn * asp), cy + s * (x * sn + y * c * asp)) for x, y in pts], fill=255)

    def _drizzle(self, img: Image.Image, rng: np.random.Generator, region: Region, base: np.ndarray,
                 labels: np.ndarray) -> None:
        mask = Image.new("L", img.size, 0)
        md = ImageDraw.Draw(mask)
        r = self._radius(region)
        for _ in range(int(rng.integers(1, 4))):
            p = self._point(rng, region, 0.7)
            pts = [p]
            for _ in range(int(rng.integers(3, 7))):
                p = (p[0] + rng.normal(0, r * 0.3), p[1] + rng.normal(0, r * 0.3))
                pts.append(p)
            md.line(pts, fill=255, width=max(1, round(rng.uniform(1.5, 4) * self.u)), joint="curve")
        col = base * rng.uniform(0.5, 0.8) if rng.random() < 0.5 else _rgb("#f7f3e8")
        img.paste(_tuple(col + rng.normal(0, 10, 3)), (0, 0), mask)
        labels[np.asarray(mask) > 127] = -1

    def render(self, rng: np.random.Generator, dish: Dish, base_hex: str, ingredients: list[int],
               quality: int = 90) -> tuple[bytes, list]:
        """Return (JPEG bytes, truth) for one image; truth: per ingredient index, its output-pixel box
        ``[x0, y0, x1, y1]`` (x1/y1 exclusive) of the visible pixels and the visible fraction."""
        img = self._table(rng)
        draw = ImageDraw.Draw(img)
        base = _rgb(base_hex) + rng.normal(0, self.jitter * 255, 3).astype(np.float32)
        region = self._vessel(draw, rng, dish, base)
        order = list(ingredients)
        if dish.layout not in ("stacked", "layered"):
            order = [order[int(i)] for i in rng.permutation(len(order))]
        looks = [self.looks[i] for i in order]
        pieces = self._layout(draw, rng, dish, region, looks, base)
        labels = np.full((self.base, self.base), -1, np.int16)
        drawn: dict[int, tuple] = {}
        for j, (ing, lk, ps) in enumerate(zip(order, looks, pieces)):
            mask = Image.new("L", img.size, 0)
            md = ImageDraw.Draw(mask)
            for p in ps:
                self._piece(md, p, rng)
            bbox = self._fill(img, mask, rng, lk)
            if bbox is not None:
                x0, y0, x1, y1 = bbox
                m = np.asarray(mask.crop(bbox)) > 127
                labels[y0:y1, x0:x1][m] = j
                drawn[j] = (bbox, int(m.sum()))
        if rng.random() < self.occlusion:
            self._drizzle(img, rng, region, base, labels)
        img = self._finish(img, rng)
        return self._jpeg(img, quality), self._truth(order, drawn, labels)

    def _finish(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Lighting gradient, white balance and brightness jitter; downsample; pixel noise."""
        a = rng.uniform(0, 2 * math.pi)
        grad = ((self._xx * math.cos(a) + self._yy * math.sin(a)) / self.base - 0.5) * rng.uniform(0, 0.3)
        gain = (1 + rng.normal(0, self.jitter)) * (1 + rng.normal(0, self.jitter / 2, 3))
        arr = np.asarray(img, np.float32) * (1 + grad)[..., None] * gain.astype(np.float32)
        small = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).reduce(2)
        if self.noise > 0:
            arr = np.asarray(small, np.float32) + rng.normal(0, self.noise * 255, (self.size, self.size, 3))
            small = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        return small

    @staticmethod
    def _jpeg(img: Image.Image, quality: int) -> bytes:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return buf.getvalue()

    def _truth(self, order: list[int], drawn: dict[int, tuple], labels: np.ndarray) -> list:
        out = []
        for j, ing in enumerate(order):
            if j not in drawn:
                continue
            (x0, y0, x1, y1), area = drawn[j]
            ys, xs = np.nonzero(labels[y0:y1, x0:x1] == j)
            if len(xs):
                x0, y0, x1, y1 = x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1
            box = [x0 // 2, y0 // 2, min(self.size, (x1 + 1) // 2), min(self.size, (y1 + 1) // 2)]
            out.append((ing, box, round(len(xs) / max(area, 1), 3)))
        return out
