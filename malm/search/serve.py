"""``malm serve``: a local web page over a search index -- upload or drop a photo, see its top-k
recipes (title, ingredients, score) and, for a run with a matching module, the attention map of a
chosen ingredient line drawn over the photo (the grounding figure's view,
:mod:`malm.eval.grounding_figure`).

Why FastAPI (+ uvicorn, python-multipart) and not ``http.server`` or Gradio: Gradio pulls a large
dependency tree and its own front end for one upload box. ``http.server`` would need a hand-written
multipart parser (``cgi`` is gone in Python 3.13), hand-rolled threading and request limits, and has
no test client. FastAPI/Starlette give an asyncio server (uvicorn) whose event loop only reads
requests and sends answers, a ``TestClient`` that drives the app in-process for the tests, and
python-multipart's *streaming* parser, which lets the upload be counted -- and refused with 413 --
while it is being read rather than after it has been spooled. The three wheels are small and pure
Python (uvicorn without its optional extras).

Behaviour:

* one model, loaded once when the server starts (:meth:`malm.search.index.Index.model`), warmed by a
  search of a generated photo, so the first visitor does not pay for imports or lazy set-up;
* the search and the attention map run in a thread pool (``workers`` threads sharing the model,
  torch releases the GIL); the event loop never runs a forward, so pages load and other uploads are
  read while a photo is being searched;
* safe by default: binds 127.0.0.1 unless ``--host`` says otherwise, and then only answers requests
  whose ``Host`` is a loopback name (DNS-rebinding guard); with another ``--host`` any Host is
  answered. Uploads are capped (``--max-upload-mb``, default 10): a ``Content-Length`` above the cap
  is refused before reading, and the body is counted while it streams in (413 as soon as it passes
  the cap). The photo is written to a fresh ``tempfile.TemporaryDirectory`` under a fixed name
  (nothing the visitor sends -- file name, field names -- is ever used as a path) and the folder is
  deleted when the answer is ready. It is decoded by :func:`malm.search.photo.load_photo`, which
  keeps Pillow's decompression-bomb limit on. Every failure (broken file, bomb, too large, unknown
  photo) is a JSON ``{"error": "<one readable line>"}`` that the page shows as text, never a stack
  trace; unexpected errors are logged on the server and answered with a short message.
* the page renders every string from the index with ``textContent`` (no HTML injection) and is
  served with a strict Content-Security-Policy (scripts and styles only from the server itself).

Endpoints (all under the server's own address):

=========================  =======================================================================
``GET  /``                 the page (``static/index.html``, ``app.js``, ``app.css`` beside it)
``GET  /api/info``         JSON: index (file, recipes, variant, checkpoint epoch), k, rerank,
                           max upload bytes, whether attention maps are available (and why not)
``POST /api/search``       the photo as ``multipart/form-data`` field ``photo`` (or the raw bytes
                           as the body) -> JSON: ``hits`` (rank, id, title, score, match_score,
                           row, ingredients: [{text, line}]), ``photo`` (an opaque key for
                           ``/api/attention``; null without a matching module), ``ms``; 400
                           unreadable photo, 413 too large
``GET  /api/attention``    ``?photo=KEY&row=ROW&line=K`` -> PNG: the photo's centre crop and the
                           matching module's attention (A_I, psi's last layer, head-averaged) of
                           ingredient line K of recipe ROW over the patches; 409 without a
                           matching module, 404 when the photo is no longer held (the server keeps
                           the last ``photo_cache`` uploads' tensors in memory, nothing on disk)
``GET  /healthz``          ``ok``
=========================  =======================================================================
"""

import asyncio
import logging
import math
import os
import secrets
import socket
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}
DEFAULT_HOST = "127.0.0.1"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
MULTIPART_SLACK = 64 * 1024      # bytes of multipart framing allowed on top of the photo cap
PHOTO_FIELD = "photo"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
                                 b"img-src 'self' blob:; connect-src 'self'; base-uri 'none'; "
                                 b"form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
NEEDS = ("fastapi", "uvicorn", "python_multipart")


class ServeError(Exception):
    """An answer other than 200: ``status`` and a one-line ``message`` for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = int(status), " ".join(str(message).split())


def require_web_stack() -> None:
    """Raise a readable error when fastapi / uvicorn / python-multipart are missing."""
    import importlib.util

    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"malm serve needs {', '.join(m.replace('_', '-') for m in missing)}: "
                           "pip install fastapi uvicorn python-multipart (pinned in requirements.txt)")


# ------------------------------------------------------------------------------------ drawing
def _inferno_lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.float32)


def attention_image(crop: np.ndarray, weights: np.ndarray, lut: np.ndarray,
                    display: int = 320) -> bytes:
    """PNG of the grounding figure's view of one ingredient: the crop ``[s, s, 3]`` uint8 beside a
    grey copy of it under the patch weights ``[g, g]`` (inferno, colour scaled per map, alpha 0.6,
    patch grid dotted, the most attended patch boxed), both scaled up to about ``display`` px."""
    import io

    from PIL import Image, ImageDraw

    s, g = crop.shape[0], weights.shape[0]
    scale = max(1, int(math.ceil(display / s)))
    side = s * scale
    w = weights.astype(np.float64)
    lo, hi = float(w.min()), float(w.max())
    norm = (w - lo) / max(hi - lo, 1e-12)
    colours = lut[np.rint(norm * 255).astype(np.int64)]                      # [g, g, 3]
    colours = np.asarray(Image.fromarray(colours.astype(np.uint8)).resize((s, s), Image.NEAREST),
                         np.float32)
    grey = crop.astype(np.float32).mean(axis=2, keepdims=True)
    blend = np.clip(np.rint(0.4 * grey + 0.6 * colours), 0, 255).astype(np.uint8)
    big_crop = Image.fromarray(crop).resize((side, side), Image.NEAREST)
    overlay = Image.fromarray(blend).resize((side, side), Image.NEAREST).convert("RGBA")
    lines = Image.new("RGBA", overlay.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(lines)
    ps = side / g
    for t in range(1, g):
        p = int(round(t * ps))
        for a in range(0, side, 6):
            draw.line([(p, a), (p, min(a + 2, side - 1))], fill=(255, 255, 255, 150))
            draw.line([(a, p), (min(a + 2, side - 1), p)], fill=(255, 255, 255, 150))
    pr, pc = divmod(int(np.argmax(w)), g)
    draw.rectangle([int(pc * ps), int(pr * ps), int((pc + 1) * ps) - 1, int((pr + 1) * ps) - 1],
                   outline=(0, 255, 255, 255), width=max(2, scale // 3))
    overlay = Image.alpha_composite(overlay, lines).convert("RGB")
    gap = 8
    out = Image.new("RGB", (2 * side + gap, side), (255, 255, 255))
    out.paste(big_crop, (0, 0))
    out.paste(overlay, (side + gap, 0))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------ the model side
@dataclass
class _Photo:
    tensor: Any            # [3, s, s] evaluation tensor (CPU)
    crop: np.ndarray       # [s, s, 3] uint8: what the model sees, for drawing


class Searcher:
    """The index, its model (loaded once) and the work the server hands to threads: searching one
    photo file and drawing an attention map. Thread-safe once constructed (everything lazily
    cached by :class:`malm.search.index.Index` is filled here, before any request)."""

    def __init__(self, index, *, k: int = 5, rerank: int = 0, device: Any = "cpu",
                 photo_cache: int = 32, warmup: bool = True):
        import torch

        from malm.search.index import Index, load_index

        self.index = index if isinstance(index, Index) else load_index(index)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k, self.rerank = k, int(rerank)
        self.model = self.index.model(device)
        self.device = next(self.model.parameters()).device
        if self.rerank and self.model.matching is None:
            raise ValueError(f"{self.index.path}: the run's model has no matching module "
                             "(lambda_gc = lambda_lc = lambda_itm = 0): --rerank needs one")
        self.index.gallery("recipe", self.device)
        self.has_attention = self.model.matching is not None
        self.attention_note = None if self.has_attention else (
            f"this run ({self.index.meta.get('variant')}) has no matching module (loss.lambda_gc = "
            "loss.lambda_lc = loss.lambda_itm = 0), so there is no attention map to show")
        pre = self.index.meta.get("preprocess", {})
        self.det = pre.get("ingredients") == "det"
        self.grid = 0
        if self.has_attention or self.rerank:
            self.tokens = self.index.tokens()
            self.tokenizer = self.index.tokenizer()
        if self.has_attention:
            self.lut = _inferno_lut()
            self.grid = int(self.index.config.model.image.img_size) // int(self.model.patch_size)
        self._photos: OrderedDict[str, _Photo] = OrderedDict()
        self._photo_cache = max(1, int(photo_cache))
        self._lock = threading.Lock()
        self._torch = torch
        if warmup:
            self._warmup()

    # ---------------------------------------------------------------- info
    def info(self) -> dict:
        m = self.index.meta
        return {"index": self.index.path.name, "recipes": len(self.index), "variant": m.get("variant"),
                "checkpoint_epoch": m.get("checkpoint", {}).get("epoch"),
                "run": Path(m.get("run_dir", "")).name, "k": self.k, "rerank": self.rerank,
                "attention": self.has_attention, "attention_note": self.attention_note,
                "device": str(self.device)}

    # ---------------------------------------------------------------- search
    def _warmup(self) -> None:
        from PIL import Image

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="malm-serve-") as tmp:
            p = Path(tmp) / "warmup.png"
            rng = np.random.default_rng(0)
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(p)
            out = self.search_file(p)
            if self.has_attention and out["hits"]:
                line = next((e["line"] for e in out["hits"][0]["ingredients"] if e["line"] is not None),
                            None)
                if line is not None:
                    self.attention(out["photo"], out["hits"][0]["row"], line)
            with self._lock:
                self._photos.clear()
        log.debug("malm serve: warm-up search in %.0f ms", 1000 * (time.perf_counter() - t0))

    def _lines(self, row: int) -> list[dict]:
        """The ingredient lines shown for recipe ``row``, each with the token slot whose attention
        can be drawn (None: not encoded -- past data.max_ingrs or no known word -- or no matching
        module). With data.ingredients=det the encoded lines are the detected ingredient names,
        so those are shown (decoded from the tokens) instead of the index's text lines."""
        text = self.index.ingredients(row)
        if not self.has_attention:
            return [{"text": t, "line": None} for t in text]
        slots = self.tokens[1][row]                        # [I, T]
        present = slots.any(axis=1)
        if self.det:
            return [{"text": self.tokenizer.decode([int(x) for x in slots[k] if x]), "line": k}
                    for k in range(len(slots)) if present[k]]
        return [{"text": t, "line": k if k < len(slots) and present[k] else None}
                for k, t in enumerate(text)]

    def search_file(self, path: str | os.PathLike) -> dict:
        """Search one photo file (run in a worker thread). Raises :class:`ServeError` 400 with the
        photo's reason when it cannot be read."""
        from malm.search.photo import CLIP_MEAN, CLIP_STD, PhotoError, load_photo
        from malm.search.query import search

        t0 = time.perf_counter()
        res = search(self.index, [path], k=self.k, rerank=self.rerank, device=self.device, workers=1)
        if res.failures:
            raise ServeError(400, f"cannot use this photo: {res.failures[0].reason}")
        hits = [{"rank": h.rank, "id": h.id, "title": h.title, "score": h.score,
                 "match_score": h.match_score, "row": h.row, "ingredients": self._lines(h.row)}
                for h in res.results[0].hits]
        key = None
        if self.has_attention:
            torch = self._torch
            try:
                t = load_photo(path, self.index.config)
            except PhotoError as exc:  # the same decode succeeded a moment ago
                raise ServeError(400, f"cannot use this photo: {exc.reason}") from None
            mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
            std = torch.tensor(CLIP_STD).view(3, 1, 1)
            crop = (t * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
            key = secrets.token_urlsafe(18)
            with self._lock:
                self._photos[key] = _Photo(t, np.rint(crop * 255).astype(np.uint8))
                while len(self._photos) > self._photo_cache:
                    self._photos.popitem(last=False)
        return {"photo": key, "k": self.k, "rerank": self.rerank, "attention": self.has_attention,
                "attention_note": self.attention_note, "hits": hits,
                "ms": round(1000 * (time.perf_counter() - t0), 1)}

    # ---------------------------------------------------------------- attention
    def attention(self, key: str, row: int, line: int) -> bytes:
        """PNG of ingredient slot ``line`` of recipe ``row`` attended from the held photo ``key``
        (run in a worker thread)."""
        torch = self._torch
        if not self.has_attention:
            raise ServeError(409, self.attention_note)
        with self._lock:
            photo = self._photos.get(key)
            if photo is not None:
                self._photos.move_to_end(key)
        if photo is None:
            raise ServeError(404, "this photo is no longer held by the server (it keeps the last "
                                  f"{self._photo_cache} uploads): upload it again")
        title, ingrs, instrs = self.tokens
        if not 0 <= row < len(title):
            raise ServeError(400, f"no recipe row {row} in this index ({len(title)} recipes)")
        if not 0 <= line < ingrs.shape[1]:
            raise ServeError(400, f"ingredient line index {line} is outside 0..{ingrs.shape[1] - 1} "
                                  "(the lines the model reads, data.max_ingrs)")
        if not np.asarray(ingrs[row, line]).any():
            raise ServeError(400, f"this recipe has no ingredient line {line + 1} among the lines "
                                  "the model reads")
        batch = {"image": photo.tensor[None].to(self.device)}
        for name, arr in (("title", title), ("ingrs", ingrs), ("instrs", instrs)):
            batch[name] = torch.from_numpy(np.asarray(arr[row:row + 1]).astype(np.int64)).to(self.device)
        with torch.inference_mode():
            out = self.model.pair_attention(batch)
        col = int(out["ingredient_cols"][0, line])
        if col < 0:
            raise ServeError(400, f"ingredient line {line + 1} of this recipe encodes to no token "
                                  "(no word of the run's vocabulary): no attention to show")
        attn = out["attn"][0, 1:, col].float().cpu().numpy()          # [P]
        g = int(round(math.sqrt(attn.shape[0])))
        if g * g != attn.shape[0]:
            raise ServeError(500, f"{attn.shape[0]} patches do not form a square grid")
        return attention_image(photo.crop, attn.reshape(g, g), self.lut)


# ------------------------------------------------------------------------------------ upload
def _boundary(content_type: str) -> bytes | None:
    from python_multipart.multipart import parse_options_header

    kind, opts = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    b = opts.get(b"boundary")
    if not b:
        raise ServeError(400, "multipart/form-data upload without a boundary")
    return b


async def read_upload(request, dest: Path, limit: int) -> int:
    """Stream the request body into ``dest``: the first file part (or field named ``photo``) of a
    multipart/form-data body, or the whole body for any other content type. Counts while
    reading; raises :class:`ServeError` 413 as soon as the photo (or the body) passes ``limit``
    bytes, 400 for a malformed or empty upload. Returns the photo's size in bytes."""
    from python_multipart.exceptions import MultipartParseError

    mb = limit / 2**20
    too_large = ServeError(413, f"the photo is larger than this server accepts ({mb:.3g} MB, "
                                "--max-upload-mb)")
    declared = request.headers.get("content-length")
    boundary = _boundary(request.headers.get("content-type", ""))
    cap = limit + (MULTIPART_SLACK if boundary else 0)
    if declared is not None:
        try:
            if int(declared) > cap:
                raise too_large
        except ValueError:
            raise ServeError(400, "bad Content-Length header") from None
    state = {"headers": [], "field": b"", "value": b"", "take": False, "done": False, "size": 0,
             "parts": 0}
    with open(dest, "xb") as f:
        def on_header_field(data, start, end):
            state["field"] += data[start:end]

        def on_header_value(data, start, end):
            state["value"] += data[start:end]

        def on_header_end():
            state["headers"].append((state["field"].lower(), state["value"]))
            state["field"], state["value"] = b"", b""

        def on_headers_finished():
            from python_multipart.multipart import parse_options_header

            disp = dict(state["headers"]).get(b"content-disposition", b"")
            _, opts = parse_options_header(disp)
            name = opts.get(b"name", b"").decode("utf-8", "replace")
            is_file = b"filename" in opts
            state["take"] = not state["done"] and (name == PHOTO_FIELD or is_file)
            state["headers"] = []

        def on_part_data(data, start, end):
            if state["take"]:
                state["size"] += end - start
                if state["size"] > limit:
                    raise too_large
                f.write(data[start:end])

        def on_part_end():
            if state["take"]:
                state["done"], state["take"] = True, False
            state["parts"] += 1

        parser = None
        if boundary is not None:
            from python_multipart.multipart import MultipartParser

            parser = MultipartParser(boundary, {
                "on_header_field": on_header_field, "on_header_value": on_header_value,
                "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data, "on_part_end": on_part_end})
        total = 0
        async for chunk in request.stream():
            if not chunk:
                continue
            total += len(chunk)
            if total > cap:
                raise too_large
            if parser is None:
                state["size"] = total
                f.write(chunk)
                continue
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ServeError(400, f"malformed multipart/form-data upload ({exc})") from None
        if parser is not None:
            try:
                parser.finalize()
            except MultipartParseError as exc:
                raise ServeError(400, f"malformed multipart/form-data upload ({exc})") from None
            if not state["done"]:
                raise ServeError(400, f"no photo in the upload (expected a file field '{PHOTO_FIELD}')")
    if state["size"] == 0:
        raise ServeError(400, "the upload is empty (0 bytes): choose a photo file")
    return int(state["size"])


# ------------------------------------------------------------------------------------ the app
def _host_name(header: str) -> str:
    """``Host`` header -> host name without port (IPv6 brackets removed), lower case."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class _Guard:
    """Pure ASGI middleware: the Host check (``allowed_hosts``; None = any Host, for a server
    bound beyond loopback) and the security headers on every answer."""

    def __init__(self, app, allowed_hosts: frozenset[str] | None):
        self.app, self.allowed = app, allowed_hosts
        self.state = app.state  # the searcher, the pool and the upload limit (create_app)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.allowed is not None:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.allowed:
                from starlette.responses import JSONResponse

                resp = JSONResponse({"error": "this server only answers requests addressed to "
                                              f"{', '.join(sorted(self.allowed))}"}, status_code=400)
                return await self._secure(resp)(scope, receive, send)

        async def send_secure(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        return await self.app(scope, receive, send_secure)

    @staticmethod
    def _secure(resp):
        for k, v in SECURITY_HEADERS:
            resp.headers[k.decode()] = v.decode()
        return resp


def create_app(index, *, k: int = 5, rerank: int = 0, max_upload_mb: float = 10.0,
               device: Any = "cpu", workers: int = 2, host: str = DEFAULT_HOST,
               photo_cache: int = 32, warmup: bool = True):
    """The ASGI app of ``malm serve`` over ``index`` (a path or a loaded
    :class:`malm.search.index.Index`): the model is loaded (and warmed) here, once. ``host`` is the
    address the server binds: a loopback one (the default) makes the app refuse requests whose
    ``Host`` is not a loopback name. Returns the app; ``app.state.searcher`` is the
    :class:`Searcher`, ``app.state.pool`` the worker threads (the caller shuts it down; the app
    can be served, or entered by a TestClient, any number of times)."""
    require_web_stack()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.responses import JSONResponse, PlainTextResponse, Response

    if not (max_upload_mb > 0):
        raise ValueError(f"max_upload_mb must be > 0, got {max_upload_mb!r}")
    limit = int(max_upload_mb * 2**20)
    searcher = Searcher(index, k=k, rerank=rerank, device=device, photo_cache=photo_cache,
                        warmup=warmup)
    pool = ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="malm-serve")
    assets = {route: ((STATIC / name).read_bytes(), ctype) for route, (name, ctype) in ASSETS.items()}

    app = FastAPI(title="malm serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.searcher, app.state.pool, app.state.limit = searcher, pool, limit

    async def in_pool(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError):
        return error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        what = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                         for e in exc.errors())
        return error(400, f"bad request ({what})")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("malm serve: %s %s failed", request.method, request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    def asset(route: str):
        body, ctype = assets[route]

        async def get():
            return Response(body, media_type=ctype)
        return get

    for route in assets:
        app.add_api_route(route, asset(route), methods=["GET"], include_in_schema=False)

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return PlainTextResponse("ok")

    @app.get("/api/info")
    async def info():
        return {**searcher.info(), "max_upload_bytes": limit, "max_upload_mb": max_upload_mb}

    @app.post("/api/search")
    async def search_photo(request: Request):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="malm-serve-") as tmp:
            dest = Path(tmp) / "upload"
            size = await read_upload(request, dest, limit)
            try:
                out = await in_pool(searcher.search_file, dest)
            except ServeError:
                raise
            except (ValueError, RuntimeError, OSError) as exc:
                log.exception("malm serve: search failed")
                raise ServeError(500, f"search failed: {exc}") from None
        out["bytes"] = size
        out["total_ms"] = round(1000 * (time.perf_counter() - t0), 1)
        return out

    @app.get("/api/attention")
    async def attention(photo: str = "", row: int = -1, line: int = -1):
        if not searcher.has_attention:
            raise ServeError(409, searcher.attention_note)
        if not photo or len(photo) > 64:
            raise ServeError(400, "missing or bad photo key: upload a photo first")
        png = await in_pool(searcher.attention, photo, row, line)
        return Response(png, media_type="image/png")

    allowed = LOOPBACK_NAMES if _is_loopback(host) else None
    return _Guard(app, allowed)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------------ running
def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port the OS picks)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on sockets that say so; without it
    # every keep-alive answer waits ~40 ms for the peer's delayed ACK (Nagle)
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):
        host = socket.gethostname()
    return f"http://{host}:{port}/"


def serve(index, *, host: str = DEFAULT_HOST, port: int = 8000, k: int = 5, rerank: int = 0,
          max_upload_mb: float = 10.0, device: Any = "cpu", workers: int = 2,
          log_level: str = "warning", out=None) -> None:
    """Load the index and model, bind ``host``:``port`` (0 = any free port), print
    ``malm serve: http://HOST:PORT/`` (flushed: the line means the server is ready) and serve until
    interrupted."""
    require_web_stack()
    import uvicorn

    out = out or sys.stdout
    if not _is_loopback(host):
        print(f"malm serve: warning: listening on {host}, reachable from other machines; anyone "
              "who can reach it can upload photos", file=sys.stderr)
    sock = bind(host, port)
    try:
        app = create_app(index, k=k, rerank=rerank, max_upload_mb=max_upload_mb, device=device,
                         workers=workers, host=host)
        config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("debug", "info"),
                                server_header=False, proxy_headers=False, limit_concurrency=64,
                                timeout_graceful_shutdown=5,
                                h11_max_incomplete_event_size=64 * 1024)
        server = uvicorn.Server(config)
        print(f"malm serve: {url_of(sock)}", file=out, flush=True)
        try:
            server.run(sockets=[sock])
        finally:
            app.state.pool.shutdown(wait=False, cancel_futures=True)
    finally:
        sock.close()
