"""Decoding one image file to the net's pixels, and checking a whole folder of them up front.

Every Pillow mode is brought to 8-bit grey or RGB by a rule that keeps its meaning:

- ``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``HSV``, ``LAB``, ``RGBX``: Pillow's own conversion;
- 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) and 32-bit integer ``I`` (what older
  Pillow gives for 16-bit PNGs): 0..65535 scaled to 0..255 (``round(v * 255 / 65535)``); an
  ``I`` pixel outside 0..65535 is refused, naming the file;
- 32-bit float ``F``: 0.0..1.0 scaled to 0..255; values outside that (or NaN) are refused;
- alpha (``LA``, ``RGBA``, ``PA``, ``La``, ``RGBa``, ``P``/``L``/``RGB`` with a ``transparency``
  key): composited over black (each channel times alpha / 255), so pixels a viewer cannot see
  do not reach the net;
- EXIF orientation is applied first (``ImageOps.exif_transpose``), so the net sees the picture
  upright, as viewers show it.

A folder is checked at open by decoding every file fully (``check``) in a thread pool: Pillow
releases the GIL while it decodes. JPEGs are decoded at the smallest DCT scale that is still at
least the net's size (``Image.draft``), which makes large photos several times cheaper and still
reads every byte, so a truncated file is found. Files already checked (same path, size,
modification time and target) are not decoded again within a process.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine.data import DatasetError

_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("LA", "RGBA", "PA", "La", "RGBa")
_ORIENTATION = 0x0112
_CACHE_LIMIT = 500_000  # entries of the checked-file memo (about 200 bytes each)
_checked: dict[tuple, tuple[tuple[int, int] | None, str | None]] = {}
_checked_lock = threading.Lock()


def pil():
    """Pillow's Image and ImageOps modules (DatasetError when Pillow is missing)."""
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover - a declared dependency
        raise DatasetError("reading image folders needs Pillow (pip install Pillow)") from None
    return Image, ImageOps


def image_suffixes() -> frozenset[str]:
    """File name endings (lower case, with the dot) of every format this Pillow can open.

    From ``PIL.Image.registered_extensions()``, minus save-only formats (PDF, ...), so a folder
    of ``.webp``, ``.bmp``, ``.tif`` or ``.gif`` files counts as images.
    """
    Image, _ = pil()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def _first_line(e: BaseException) -> str:
    text = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return text[0].strip() if text else type(e).__name__


class BadImage(Exception):
    """An image whose pixels cannot be brought to 8 bits by a fixed rule (the text says why)."""


def _composite(im, grey: bool):
    """Alpha composited over black: 8-bit L or RGB."""
    a = np.asarray(im.convert("LA" if grey else "RGBA"), dtype=np.uint16)
    colour, alpha = a[..., :-1], a[..., -1:]
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    Image, _ = pil()
    return Image.fromarray(out[..., 0], "L") if grey else Image.fromarray(out, "RGB")


def to_8bit(im):
    """``im`` as an 8-bit ``L`` or ``RGB`` image by the rules of this module; BadImage if it has none."""
    Image, _ = pil()
    m = im.mode
    if m in _GREY16 or m == "I":
        a = np.asarray(im)
        if m == "I" and a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise BadImage(f"32-bit integer pixels from {int(a.min())} to {int(a.max())}; integer images "
                           "are read as 16-bit (0..65535)")
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
        return Image.fromarray(a.astype(np.uint8), "L")
    if m == "F":
        a = np.asarray(im, dtype=np.float32)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            raise BadImage(f"32-bit float pixels from {lo:g} to {hi:g}{' (and NaN)' if np.isnan(a).any() else ''}; "
                           "float images are read in the range 0..1")
        return Image.fromarray(np.rint(a * 255).astype(np.uint8), "L")
    if m in _ALPHA or (m in ("P", "L", "RGB") and "transparency" in im.info):
        grey = m in ("LA", "La", "L")
        return _composite(im, grey)
    if m in ("L", "RGB"):
        return im
    if m == "1":
        return im.convert("L")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise BadImage(f"Pillow cannot convert mode {m} to RGB ({_first_line(e)})") from None


def decode(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """The image at ``path`` as uint8 C x H x W (``mode`` "L": C = 1, "RGB": C = 3) at ``size``
    (height, width): EXIF orientation applied, converted by ``to_8bit``'s rules, then resized
    with Pillow's bilinear filter (antialiased when shrinking). Raises BadImage (a reason) for
    pixels with no 8-bit rule and any Pillow error for a damaged file."""
    return _decode(path, mode, size)[0]


def _decode(path: Path, mode: str, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """(pixels as ``decode`` gives them, the picture's upright (width, height) as stored)."""
    Image, ImageOps = pil()
    h, w = size
    with Image.open(path) as im:
        try:
            turned = im.getexif().get(_ORIENTATION) in (5, 6, 7, 8)
        except Exception:  # a damaged EXIF block: the pixels may still be fine
            turned = False
        stored = im.size[::-1] if turned else im.size
        side = max(h, w)
        im.draft(im.mode, (side, side) if turned else (w, h))  # JPEG: decode at a smaller DCT scale
        im.load()
        im = ImageOps.exif_transpose(im)
        im = to_8bit(im)
        if im.mode != mode:
            im = im.convert(mode)
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    return (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)), stored


def _check_one(path: Path, mode: str, size: tuple[int, int]) -> tuple[tuple[int, int] | None, str | None]:
    """((width, height) as stored, None) for a good file, (None, reason) for one that cannot be used."""
    try:
        st = os.stat(path)
    except OSError as e:
        return None, f"cannot be read: {e.strerror or e}"
    key = (os.fspath(path), st.st_size, st.st_mtime_ns, mode, size)
    hit = _checked.get(key)
    if hit is not None:
        return hit
    Image, _ = pil()
    try:
        result = (_decode(path, mode, size)[1], None)
    except BadImage as e:
        result = (None, f"has {e}")
    except Image.UnidentifiedImageError:
        result = (None, "is not an image Pillow can identify")
    except PermissionError as e:
        result = (None, f"cannot be read: {e.strerror or e}")
    except Exception as e:  # Pillow raises many types for a damaged file
        result = (None, f"cannot be decoded ({_first_line(e)})")
    with _checked_lock:
        if len(_checked) >= _CACHE_LIMIT:
            _checked.clear()
        _checked[key] = result
    return result


def check(paths: list[Path], mode: str, size: tuple[int, int], workers: int | None = None):
    """Decode every file as training will; returns (stored sizes per path, {index: reason} of bad files).

    ``workers`` threads (default: the cores, at most 8) share the files; the order of the result
    follows ``paths``.
    """
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 16:
        results = [_check_one(p, mode, size) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda p: _check_one(p, mode, size), paths, chunksize=32))
    sizes = [r[0] for r in results]
    bad = {i: r[1] for i, r in enumerate(results) if r[1] is not None}
    return sizes, bad
