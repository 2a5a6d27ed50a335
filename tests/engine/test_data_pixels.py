"""Every pixel format Pillow gives reaches the net with the values a person sees (issue 9, items 21
and 23): 16-bit and float images scaled, not clipped to white; alpha composited over black; EXIF
orientation applied; any format Pillow reads counts as an image."""
import numpy as np
import pytest
from PIL import Image

import engine
from engine.data import DatasetError, get_dataset
from engine.data.images import BadImage, decode, image_suffixes, to_8bit

from _datagen import png16

LEVELS16 = [0, 257, 32896, 65535]  # 0, 1, 128, 255 in 8 bits (v * 255 / 65535)
LEVELS8 = [0, 1, 128, 255]


def _save(im, path):
    im.save(path)
    return path


def _palette(transparent: bool):
    im = Image.new("P", (3, 1))
    im.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 255] + [0] * (768 - 9))
    im.putdata([0, 1, 2])
    if transparent:
        im.info["transparency"] = 1
    return im


def _grey16(mode):
    a = np.array([LEVELS16], dtype={"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2"))
    return Image.frombytes(mode, (4, 1), a.tobytes())


# name, writer(tmp_path) -> file, the mode Pillow must open it as, expected RGB pixels (H x W x 3)
CASES = [
    ("grey16-png", lambda d: _save(Image.fromarray(np.array([LEVELS16], np.uint16)), d / "a.png"), "I;16",
     np.array([[[v] * 3 for v in LEVELS8]])),
    ("grey16-png-bytes", lambda d: (d / "a.png").write_bytes(png16(np.array([LEVELS16]), 0)) and d / "a.png",
     "I;16", np.array([[[v] * 3 for v in LEVELS8]])),
    ("grey16-big-endian-tif", lambda d: _save(_grey16("I;16B"), d / "a.tif"), "I;16B",
     np.array([[[v] * 3 for v in LEVELS8]])),
    ("int32-tif", lambda d: _save(Image.fromarray(np.array([LEVELS16], np.int32), "I"), d / "a.tif"), "I",
     np.array([[[v] * 3 for v in LEVELS8]])),
    ("float-tif", lambda d: _save(Image.fromarray(np.array([[0, 0.25, 0.5, 1.0]], np.float32), "F"), d / "a.tif"),
     "F", np.array([[[v] * 3 for v in (0, 64, 128, 255)]])),
    ("rgb16-png", lambda d: (d / "a.png").write_bytes(png16(np.array([[[65535, 32896, 257], [0, 65535, 0]]]), 2))
     and d / "a.png", "RGB", np.array([[[255, 128, 1], [0, 255, 0]]])),
    ("rgba16-png", lambda d: (d / "a.png").write_bytes(
        png16(np.array([[[65535, 32896, 257, 65535], [65535, 65535, 65535, 0]]]), 6)) and d / "a.png",
     "RGBA", np.array([[[255, 128, 1], [0, 0, 0]]])),
    ("bilevel", lambda d: _save(Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1"), d / "a.png"), "1",
     np.array([[[0] * 3, [255] * 3, [0] * 3]])),
    ("grey", lambda d: _save(Image.fromarray(np.array([[0, 77, 255]], np.uint8)), d / "a.png"), "L",
     np.array([[[0] * 3, [77] * 3, [255] * 3]])),
    ("grey-alpha", lambda d: _save(Image.fromarray(np.array([[[200, 128], [200, 255], [200, 0]]], np.uint8), "LA"),
                                   d / "a.png"), "LA", np.array([[[100] * 3, [200] * 3, [0] * 3]])),
    ("palette", lambda d: _save(_palette(False), d / "a.png"), "P",
     np.array([[[10, 20, 30], [200, 100, 50], [0, 0, 255]]])),
    ("palette-transparency", lambda d: _save(_palette(True), d / "a.png"), "P",
     np.array([[[10, 20, 30], [0, 0, 0], [0, 0, 255]]])),
    ("rgba", lambda d: _save(Image.fromarray(np.array([[[200, 100, 50, 128], [200, 100, 50, 255],
                                                        [200, 100, 50, 0]]], np.uint8), "RGBA"), d / "a.png"),
     "RGBA", np.array([[[100, 50, 25], [200, 100, 50], [0, 0, 0]]])),
    ("cmyk-tif", lambda d: _save(Image.frombytes("CMYK", (2, 1), bytes([255, 0, 0, 0, 0, 0, 0, 0])), d / "a.tif"),
     "CMYK", np.array([[[0, 255, 255], [255, 255, 255]]])),
    ("rgb-webp", lambda d: Image.fromarray(np.array([[[9, 99, 199], [255, 0, 3]]], np.uint8)).save(
        d / "a.webp", lossless=True) or d / "a.webp", "RGB", np.array([[[9, 99, 199], [255, 0, 3]]])),
    ("rgb-bmp", lambda d: _save(Image.fromarray(np.array([[[9, 99, 199], [255, 0, 3]]], np.uint8)), d / "a.bmp"),
     "RGB", np.array([[[9, 99, 199], [255, 0, 3]]])),
]


@pytest.mark.parametrize("name, write, pil_mode, expected", CASES, ids=[c[0] for c in CASES])
def test_every_mode_reaches_the_net_with_its_values(tmp_path, name, write, pil_mode, expected):
    path = write(tmp_path)
    with Image.open(path) as im:
        assert im.mode == pil_mode  # the case tests the mode it names
    expected = np.asarray(expected, dtype=np.uint8)
    h, w = expected.shape[:2]
    rgb = decode(path, "RGB", (h, w))
    assert rgb.shape == (3, h, w) and rgb.dtype == np.uint8
    assert np.array_equal(rgb.transpose(1, 2, 0), expected), rgb.transpose(1, 2, 0).tolist()
    # a one-channel net sees the luma of the same colours (Pillow's ITU-R 601 weights)
    grey = decode(path, "L", (h, w))
    luma = np.asarray(Image.fromarray(expected, "RGB").convert("L"))
    assert grey.shape == (1, h, w) and np.array_equal(grey[0], luma)


def test_in_memory_modes_without_a_file_format():
    pa = Image.new("PA", (2, 1))
    pa.putpalette([200, 100, 50] * 256)
    pa.putdata([(0, 255), (0, 0)])
    assert np.asarray(to_8bit(pa)).tolist() == [[[200, 100, 50], [0, 0, 0]]]
    hsv = Image.frombytes("HSV", (2, 1), bytes([0, 255, 255, 85, 255, 255]))  # pure red, pure green
    assert np.asarray(to_8bit(hsv)).tolist() == [[[255, 0, 0], [0, 255, 0]]]
    ycc = Image.frombytes("YCbCr", (1, 1), bytes([128, 128, 128]))  # mid grey
    assert np.asarray(to_8bit(ycc)).tolist() == [[[128, 128, 128]]]
    rgbx = Image.frombytes("RGBX", (1, 1), bytes([1, 2, 3, 99]))
    assert np.asarray(to_8bit(rgbx)).tolist() == [[[1, 2, 3]]]
    # CIE L*a*b* (a, b signed): white, black, and sRGB red (L* 53, a* 80, b* 67), within 12 levels
    lab = Image.frombytes("LAB", (3, 1), bytes([255, 0, 0, 0, 0, 0, 136, 80, 67]))
    got = np.asarray(to_8bit(lab)).astype(int)
    assert np.abs(got - np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]])).max() <= 12, got.tolist()
    for mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        im = _grey16(mode)
        assert im.mode == mode and np.asarray(to_8bit(im)).tolist() == [LEVELS8]


@pytest.mark.parametrize("mode, values, words", [
    ("I", [0, 70000], "32-bit integer pixels from 0 to 70000"),
    ("I", [-5, 100], "from -5 to 100"),
    ("F", [0.0, 2.5], "32-bit float pixels from 0 to 2.5"),
    ("F", [0.0, float("nan")], "NaN"),
])
def test_pixels_without_an_8_bit_meaning_are_refused_naming_the_file(tmp_path, mode, values, words):
    dtype = np.int32 if mode == "I" else np.float32
    for cls in ("a", "b"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.array([[10, 20], [30, 40]], dtype) if mode == "I" else
                            np.array([[0.1, 0.2], [0.3, 0.4]], dtype), mode).save(tmp_path / "f" / cls / f"{i}.tif")
    Image.fromarray(np.array([values], dtype), mode).save(tmp_path / "f" / "b" / "1.tif")
    with pytest.raises(BadImage, match=words):
        decode(tmp_path / "f" / "b" / "1.tif", "L", (1, 2))
    with pytest.raises(DatasetError) as e:
        get_dataset(str(tmp_path / "f"), engine.InputSpec(1, 2, 2, 10))
    assert "b/1.tif has " in str(e.value) and words in str(e.value)


def test_16_bit_png_folder_is_not_white(tmp_path):
    """The reported fault: every pixel of a 16-bit PNG read as 255."""
    rng = np.random.default_rng(3)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            a16 = rng.integers(0, 65536, size=(8, 8)).astype(np.uint16)
            Image.fromarray(a16).save(tmp_path / cls / f"{i}.png")
    d = get_dataset(str(tmp_path), engine.InputSpec(1, 8, 8, 2))
    for i in range(len(d.train)):
        path = d.train.source.paths[int(d.train.indices[i])]
        want = (np.asarray(Image.open(path)).astype(np.uint32) * 255 + 32767) // 65535
        assert np.array_equal(d.train.image(i).numpy(), want)
    assert d.train.image(0).float().std() > 30  # not solid white


# EXIF orientation: how the stored pixels must be turned to be seen upright (independent of Pillow)
ORIENTED = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud, 5: lambda a: a.T,
            6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].T, 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40  # 3 wide, 2 high, every pixel distinct
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(stored, "L").save(path, exif=exif.tobytes())
    upright = ORIENTED[orientation](stored)
    got = decode(path, "L", upright.shape)
    assert np.array_equal(got[0], upright), (orientation, got[0].tolist())


def test_exif_orientation_reaches_the_dataset_and_its_size_note(tmp_path):
    stored = np.zeros((4, 6), np.uint8)
    stored[0, 0] = 255  # top-left as stored; orientation 6 shows it top-right
    exif = Image.Exif()
    exif[0x0112] = 6
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(stored, "L").save(tmp_path / cls / f"{i}.png", exif=exif.tobytes())
    d = get_dataset(str(tmp_path), engine.InputSpec(1, 6, 4, 2))  # upright: 4 wide, 6 high, no resize
    img = d.train.image(0).numpy()
    assert img.shape == (6, 4) and img[0, 3] == 255 and img.sum() == 255
    assert not any(n.startswith("resize") for n in d.info.preprocessing)


def test_any_format_pillow_reads_is_an_image(tmp_path):
    suffixes = image_suffixes()
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"} <= suffixes
    assert ".pdf" not in suffixes  # Pillow writes PDF but cannot read it
    colours = {"webp": (255, 0, 0), "bmp": (0, 255, 0), "gif": (0, 0, 255), "tif": (255, 255, 0)}
    for cls, colour in colours.items():
        (tmp_path / cls).mkdir()
        for i in range(2):
            im = Image.new("RGB", (4, 4), colour)
            im.save(tmp_path / cls / f"{i}.{cls.upper() if cls == 'tif' else cls}", **(
                {"lossless": True} if cls == "webp" else {}))
    d = get_dataset(str(tmp_path), engine.InputSpec(3, 4, 4, 4))
    assert d.info.class_names == sorted(colours) and len(d.train) + len(d.test) == 8
    assert "BMP, GIF, TIF, WEBP" in d.info.source
    for split in (d.train, d.test):
        for i in range(len(split)):
            label = split[i][1]
            assert tuple(split.image(i)[:, 0, 0].tolist()) == colours[d.info.class_names[label]]


def test_webp_only_class_is_not_empty(tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (5, 5), (i * 50, 0, 0)).save(tmp_path / cls / f"{i}.webp", lossless=True)
    d = get_dataset(str(tmp_path), engine.InputSpec(3, 5, 5, 2))
    assert d.info.classes == 2 and len(d.train) + len(d.test) == 6
