"""Opening people's photos exactly as evaluation sees a cached image.

Evaluation reads a pair's first image from the preprocessing cache: decoded and resized by
:func:`malm.data.store.load_resized` (JPEG draft decode, shorter side to ``data.cache_image_size``,
centre crop) when the cache was built, then centre-cropped to ``model.image.img_size`` and
CLIP-normalised by :class:`malm.data.dataset.RecipeImageDataset`. :func:`load_photo` runs the same
two steps on any file:

* a plain photo (RGB / greyscale / CMYK / palette without transparency, no EXIF rotation) goes
  through ``load_resized`` itself, by path: the cache's own code, byte for byte;
* any other photo is first made a plain RGB image in memory (EXIF rotation applied with
  ``ImageOps.exif_transpose``, transparency composited on white, 16/32-bit and float greyscale
  scaled to 8 bits) after the same JPEG draft decode ``load_resized`` asks for, and that image is
  handed to ``load_resized`` as an uncompressed PPM stream, so the resize and crop are still the
  cache's code;
* :func:`eval_tensor` is the dataset's evaluation crop and normalisation (same crop offsets, same
  float operations in the same order: the tensor equals ``dataset[i]["image"]`` bit for bit, tested).

Pillow's decompression-bomb limit stays on: a file whose header claims more than twice
``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's own error threshold; the default limit is used when
someone has set it to ``None``) is refused before any pixel is decoded. Every failure is a
:class:`PhotoError` whose message is one line naming the file and the reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from malm.data.dataset import CLIP_MEAN, CLIP_STD
from malm.data.store import load_resized

_DEFAULT_MAX_PIXELS = 89_478_485            # Pillow's default Image.MAX_IMAGE_PIXELS
_ORIENTATION = 0x0112                       # EXIF orientation tag
_PLAIN_MODES = frozenset({"RGB", "L", "1", "CMYK", "YCbCr", "P"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_INT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class PhotoError(ValueError):
    """A photo that cannot be used; ``str(err)`` is ``"<path>: <reason>"`` on one line."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")


def image_extensions() -> frozenset[str]:
    """File suffixes Pillow can open here (lower case, with the dot): what a folder expands to."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def expand_photos(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Photo arguments -> files: a folder becomes its image files (by suffix, recursively, sorted,
    hidden entries skipped); anything else is kept as given (a missing file fails later, by name)."""
    exts = image_extensions()
    out: list[str] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found += [os.path.join(dirpath, f) for f in filenames
                          if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
            out += sorted(found)
        else:
            out.append(str(p))
    return out


def pixel_limit() -> int:
    """Pixels above which a photo is refused: Pillow's error threshold, 2 x MAX_IMAGE_PIXELS."""
    return 2 * int(Image.MAX_IMAGE_PIXELS or _DEFAULT_MAX_PIXELS)


def _to_plain_rgb(im: Image.Image) -> Image.Image:
    """Any decoded mode -> RGB: alpha composited on white, high bit depths scaled to 8 bits."""
    mode = im.mode
    if mode in _INT16_MODES or mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F":
            a = a.astype(np.float64)
            a = np.nan_to_num(a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a)
        elif mode == "I" and a.max(initial=0) <= 255:
            a = a.astype(np.float64)                  # 8-bit values held in 32 bits
        else:
            a = np.clip(a.astype(np.float64), 0, 65535) / 257.0   # 16-bit range -> 8 bits
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return (f"refused: {exc} (Pillow's decompression-bomb limit; open it yourself and save a "
                "smaller copy if you trust the file)")
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read (unknown or unsupported format)"
    if isinstance(exc, (OSError, SyntaxError)) and "truncated" in str(exc).lower():
        return f"truncated or cut-off image file (Pillow: {exc})"
    return f"cannot decode the image ({type(exc).__name__}: {exc})"


def read_photo(path: str | os.PathLike, size: int) -> np.ndarray:
    """A photo as the cache stores an image: ``[size, size, 3]`` uint8, decoded, shorter side
    resized to ``size`` and centre-cropped by :func:`malm.data.store.load_resized`. Raises
    :class:`PhotoError` naming the file on any failure."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PhotoError(path, "no such file") from None
    except OSError as exc:
        raise PhotoError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if path.is_dir():
        raise PhotoError(path, "is a folder, not a photo")
    if st.st_size == 0:
        raise PhotoError(path, "empty file (0 bytes)")
    try:
        # Between 1x and 2x MAX_IMAGE_PIXELS Pillow only warns (DecompressionBombWarning): large
        # phone photos pass. The warning is left as it is: filtering it here would not be
        # thread-safe (photos are decoded in threads).
        with Image.open(path) as im:
            w, h = im.size
            if w * h > pixel_limit():  # also when MAX_IMAGE_PIXELS was switched off
                raise Image.DecompressionBombError(
                    f"Image size ({w * h} pixels) exceeds limit of {pixel_limit()} pixels")
            orientation = im.getexif().get(_ORIENTATION, 1)
            plain = (im.mode in _PLAIN_MODES and "transparency" not in im.info
                     and orientation in (None, 1))
            if not plain:
                im.draft("RGB", (size, size))  # as load_resized: JPEG DCT-scaled decode
                rgb = _to_plain_rgb(ImageOps.exif_transpose(im))
        if plain:
            return load_resized(os.fspath(path), size)
        buf = io.BytesIO()
        rgb.save(buf, format="PPM")   # uncompressed: load_resized decodes exactly these pixels
        buf.seek(0)
        return load_resized(buf, size)  # type: ignore[arg-type]  # Image.open takes a stream
    except PhotoError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's failure, by name
        raise PhotoError(path, _reason(exc)) from None


def eval_tensor(img: np.ndarray, image_size: int):
    """A cached image ``[S, S, 3]`` uint8 -> ``[3, image_size, image_size]`` float32: evaluation's
    centre crop (torchvision CenterCrop offsets) and CLIP normalisation, the same float operations
    as :class:`malm.data.dataset.RecipeImageDataset` (scale then offset, in place)."""
    import torch

    S, s = img.shape[0], int(image_size)
    if img.ndim != 3 or img.shape[1] != S or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a [S, S, 3] uint8 image, got {img.shape} {img.dtype}")
    if s > S:
        raise ValueError(f"crop {s} exceeds the image side {S}")
    top = left = int(round((S - s) / 2.0))
    crop = np.array(img[top:top + s, left:left + s])
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    out = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()
    return out.mul_(1.0 / (255.0 * std)).sub_(mean / std)


def load_photo(path: str | os.PathLike, cfg, *, cache_image_size: int | None = None,
               image_size: int | None = None):
    """Any photo -> the ``[3, s, s]`` float32 tensor evaluation would give it, had it been in the
    cache: :func:`read_photo` at ``data.cache_image_size``, then :func:`eval_tensor` at
    ``model.image.img_size`` of ``cfg`` (a run's :class:`malm.config.Config`; the keyword
    arguments override either side). Raises :class:`PhotoError` (one line: file and reason)."""
    S = int(cache_image_size or cfg.data.cache_image_size)
    s = int(image_size or cfg.model.image.img_size)
    return eval_tensor(read_photo(path, S), s)
