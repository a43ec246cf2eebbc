import numpy as np
import pytest
from PIL import Image

from distgan.imagefile import ImageReadError, list_images, read_image, write_image


def _rgb16(shape=(6, 5, 3)):
    return np.random.default_rng(0).integers(0, 65536, shape, dtype=np.uint16)


@pytest.mark.parametrize("name", ["a.png", "a.tif"])
def test_16_bit_rgb_round_trips_exactly(tmp_path, name):
    arr = _rgb16()
    rgb = arr.astype(np.float32) / 65535
    from distgan.imagefile import ImageInfo

    write_image(tmp_path / name, rgb, ImageInfo(name, 16, False, None))
    back, info = read_image(tmp_path / name)
    assert info.bits == 16
    assert np.array_equal(np.rint(back * 65535).astype(np.uint16), arr)


def test_grey_rgba_palette_and_16bit_grey_decode_to_rgb(tmp_path):
    g = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(g).save(tmp_path / "g.png")
    rgba = np.dstack([np.full((4, 5, 3), 100, np.uint8), np.full((4, 5), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 5, 3), 200, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        tmp_path / "p.png")
    Image.fromarray(g.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    x, info = read_image(tmp_path / "g.png")
    assert x.shape == (4, 5, 3) and info.grey and np.allclose(x[..., 0], g / 255)
    x, info = read_image(tmp_path / "a.png")
    assert x.shape == (4, 5, 3) and info.alpha is not None and np.all(info.alpha == 7)
    x, _ = read_image(tmp_path / "p.png")
    assert x.shape == (4, 5, 3) and np.allclose(x, 200 / 255)
    x, info = read_image(tmp_path / "g16.png")
    assert info.bits == 16 and info.grey and np.allclose(x[..., 1], g / 255, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((2, 4, 3), np.uint8)
    arr[0, 0] = 255  # marker top-left
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    x, _ = read_image(tmp_path / "r.jpg")
    assert x.shape == (4, 2, 3)


@pytest.mark.parametrize("mode, save", [
    ("RGB", {"subsampling": 2}), ("RGB", {"subsampling": 0}), ("RGB", {"subsampling": 1}),
    ("RGB", {"progressive": True}), ("L", {}), ("CMYK", {}),
])
def test_jpeg_decodes_to_pillows_pixels(tmp_path, monkeypatch, mode, save):
    """The libjpeg-turbo path (colour and grey) gives exactly Pillow's pixels, and the
    kinds it leaves to Pillow (CMYK) still decode; odd sizes test the chroma edges."""
    from distgan import imagefile

    taken = []
    turbo_jpeg = imagefile._turbo_jpeg
    monkeypatch.setattr(imagefile, "_turbo_jpeg", lambda *a: taken.append(a[1]) or turbo_jpeg(*a))

    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.integers(0, 9, (37, 53, 4)), axis=1) % 256
    arr = smooth[..., : {"RGB": 3, "L": 1, "CMYK": 4}[mode]].astype(np.uint8).squeeze()
    Image.fromarray(arr, mode).save(tmp_path / "a.jpg", quality=90, **save)
    data = (tmp_path / "a.jpg").read_bytes()
    with Image.open(tmp_path / "a.jpg") as im:
        want = np.asarray(im.convert("RGB"))
    x, info = imagefile.decode_native(data, "a.jpg")
    assert taken == ([] if mode == "CMYK" else [mode])
    assert x.dtype == np.uint8 and info.grey == (mode == "L")
    assert np.array_equal(x, want)


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"hello, not an image", "not a readable image"),
     (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a readable image")],
)
def test_bad_files_give_a_clear_reason(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as e:
        read_image(p)
    assert str(p) in str(e.value)


def test_truncated_jpeg_is_refused(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.jpg"):
        read_image(tmp_path / "t.jpg")


def test_size_limit(tmp_path):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImageReadError, match="MP limit"):
        read_image(tmp_path / "big.png", max_megapixels=0.005)


def test_list_images_is_recursive_and_filters(tmp_path):
    (tmp_path / "sub").mkdir()
    for n in ["a.JPG", "sub/b.webp", "c.txt", ".hidden.png", "sub/d.tiff"]:
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.webp", "d.tiff"]


def test_write_is_atomic_and_keeps_alpha(tmp_path):
    from distgan.imagefile import ImageInfo

    alpha = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    write_image(tmp_path / "o.png", np.full((4, 5, 3), 0.5, np.float32),
                ImageInfo("", 8, False, alpha))
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]
    x, info = read_image(tmp_path / "o.png")
    assert np.array_equal(info.alpha, alpha)
