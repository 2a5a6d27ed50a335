"""What checking every image at open costs: an image folder of N small files (default 2,000 PNGs of
32x32 and 2,000 JPEGs of 64x48, 10 classes) and a few large photos, opened for lenet5's 1x28x28
input. Prints ``name: value`` lines (seconds, and ratios within this run):

    header_only_s         Image.open of every file (the check before issue 9: truncation passes)
    check_serial_s        every file fully decoded and fitted, one thread
    check_threads_s       the same in a thread pool (engine.data.images.check's default)
    open_first_s          get_dataset of the folder, nothing checked yet (check + statistics)
    open_again_s          get_dataset again in the same process (unchanged files are not re-decoded)
    photo_check_draft_s   large JPEGs (1600x1200) checked with JPEG draft decoding (what we do)
    photo_check_full_s    the same decoded at full size

Usage: python benchmarks/data_open.py [--n 2000] [--photos 40]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402,F401  (loaded before timing: get_dataset would otherwise include its import)
from PIL import Image  # noqa: E402

import engine  # noqa: E402
from engine.data import get_dataset  # noqa: E402
from engine.data import images as imaging  # noqa: E402


def _write(folder: Path, n: int, size, fmt: str, seed: int, smooth: bool = False) -> list[Path]:
    """Noise images, or (``smooth``) gradients with mild noise, which compress like photos."""
    rng = np.random.default_rng(seed)
    paths = []
    w, h = size
    for i in range(n):
        cls = folder / f"c{i % 10}"
        cls.mkdir(parents=True, exist_ok=True)
        if smooth:
            yy, xx = np.mgrid[0:h, 0:w]
            base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy + i * 37) % 256], axis=-1)
            a = np.clip(base + rng.normal(0, 6, size=(h, w, 3)), 0, 255).astype(np.uint8)
        else:
            a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        p = cls / f"{fmt.lower()}{i:05d}.{'png' if fmt == 'PNG' else 'jpg'}"
        Image.fromarray(a).save(p, fmt)
        paths.append(p)
    return paths


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="small images of each kind (PNG and JPEG)")
    ap.add_argument("--photos", type=int, default=40, help="large JPEGs for the draft comparison")
    args = ap.parse_args()
    spec = engine.InputSpec(1, 28, 28, 10)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "f"
        paths = _write(folder, args.n, (32, 32), "PNG", 0) + _write(folder, args.n, (64, 48), "JPEG", 1)

        def header_only():
            for p in paths:
                with Image.open(p) as im:
                    im.size  # noqa: B018

        print(f"files: {len(paths)}")
        print(f"cores: {os.cpu_count()}")
        print(f"header_only_s: {_timed(header_only):.3f}")
        imaging._checked.clear()
        serial = _timed(lambda: imaging.check(paths, "L", (28, 28), workers=1))
        imaging._checked.clear()
        threads = _timed(lambda: imaging.check(paths, "L", (28, 28)))
        print(f"check_serial_s: {serial:.3f}")
        print(f"check_threads_s: {threads:.3f}")
        print(f"check_serial_ms_per_image: {serial / len(paths) * 1000:.3f}")
        print(f"threads_speedup: {serial / threads:.2f}")
        imaging._checked.clear()
        first = _timed(lambda: get_dataset(str(folder), spec))
        again = _timed(lambda: get_dataset(str(folder), spec))
        print(f"open_first_s: {first:.3f}")
        print(f"open_again_s: {again:.3f}")

        photos = _write(Path(tmp) / "p", args.photos, (1600, 1200), "JPEG", 2, smooth=True)
        imaging._checked.clear()
        draft = _timed(lambda: imaging.check(photos, "L", (28, 28), workers=1))
        from PIL import JpegImagePlugin

        real_draft = JpegImagePlugin.JpegImageFile.draft
        JpegImagePlugin.JpegImageFile.draft = lambda self, mode, size: None  # decode at full size
        try:
            imaging._checked.clear()
            full = _timed(lambda: imaging.check(photos, "L", (28, 28), workers=1))
        finally:
            JpegImagePlugin.JpegImageFile.draft = real_draft
        print(f"photo_check_draft_s: {draft:.3f}")
        print(f"photo_check_full_s: {full:.3f}")
        print(f"photo_draft_speedup: {full / draft:.2f}")


if __name__ == "__main__":
    main()
