"""Reading and writing photos: 8/16-bit PNG and TIFF, JPEG; grey, RGB, RGBA, palette.

`read_image` returns the pixels as float32 RGB in [0, 1] plus what is needed to write
the result back the same way (bit depth, alpha, grey). EXIF orientation is applied.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from .errors import UserError

# Our own size guard (`max_megapixels`, checked from the header before decoding) replaces
# Pillow's global one, which would refuse the 100 MP photos the denoiser is meant for.
Image.MAX_IMAGE_PIXELS = None
DEFAULT_MAX_MEGAPIXELS = 400.0

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


class ImageReadError(UserError, ValueError):
    """A file that is not a readable image; the message names the file and the reason."""


@dataclass
class ImageInfo:
    path: str
    bits: int  # 8 or 16
    grey: bool
    alpha: np.ndarray | None  # H x W in the image's own dtype, passed through untouched


def full_scale(dtype) -> float:
    return 255.0 if np.dtype(dtype) == np.uint8 else 65535.0


def split_channels(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Any decoded array -> (RGB, alpha or None, was_grey), kept as uint8 or uint16."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.rint(arr * 65535.0), 0, 65535).astype(np.uint16)
    elif arr.dtype not in (np.uint8, np.uint16):
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"unsupported image shape {arr.shape}")
    c = arr.shape[2]
    alpha = arr[..., c - 1] if c in (2, 4) else None
    rgb = arr[..., : 3 if c >= 3 else 1]
    grey = rgb.shape[2] == 1
    if grey:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb), alpha, grey


def _reason(e: Exception) -> str:
    if isinstance(e, Image.UnidentifiedImageError):
        return "unknown format or corrupt data"
    return f"{type(e).__name__}: {e}"


def read_native(
    path: str | Path, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
) -> tuple[np.ndarray, ImageInfo]:
    """Decode `path` to RGB uint8 or uint16 (its own bit depth), EXIF orientation applied."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot be read ({e.strerror})") from None
    return decode_native(data, str(path), max_megapixels)


_ORIENTATION = 0x0112  # the EXIF tag


def decode_native(
    data: bytes, name: str, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
) -> tuple[np.ndarray, ImageInfo]:
    """Decode an encoded image held in memory; `name` (its path) is used for the format
    and in error messages."""
    if len(data) == 0:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    arr = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if max_megapixels is not None and im.width * im.height > max_megapixels * 1e6:
                raise ImageReadError(
                    f"{name}: {im.width} x {im.height} is over the {max_megapixels:g} MP limit"
                )
            if im.getexif().get(_ORIENTATION, 1) != 1:  # else exif_transpose only copies
                im = ImageOps.exif_transpose(im)
            elif im.format == "JPEG" and im.mode in ("RGB", "L"):
                arr = _turbo_jpeg(data, im.mode)
            if arr is None:
                arr = _pil_to_array(im, data, Path(name).suffix.lower())
    except ImageReadError:
        raise
    except Exception as e:  # PIL raises many types for corrupt files
        raise ImageReadError(f"{name}: not a readable image ({_reason(e)})") from None
    rgb, alpha, grey = split_channels(arr)
    return rgb, ImageInfo(name, 8 if rgb.dtype == np.uint8 else 16, grey, alpha)


def read_image(
    path: str | Path, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
) -> tuple[np.ndarray, ImageInfo]:
    """Decode `path` to float32 RGB in [0, 1] (EXIF orientation applied)."""
    rgb, info = read_native(path, max_megapixels)
    return rgb.astype(np.float32) / np.float32(full_scale(rgb.dtype)), info


def decode_rgb8(
    data: bytes, name: str, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS
) -> np.ndarray:
    """Decode straight to RGB uint8 (the training pipeline's input): 16-bit sources are
    rounded down to 8 bits, alpha is dropped."""
    rgb, _ = decode_native(data, name, max_megapixels)
    if rgb.dtype == np.uint8:
        return rgb
    return np.rint(rgb.astype(np.float32) / np.float32(257.0)).astype(np.uint8)


def _turbo_jpeg(data: bytes, mode: str) -> np.ndarray | None:
    """An upright 8-bit colour or grey JPEG, decoded by libjpeg-turbo straight into the
    array (simplejpeg): the same pixels as Pillow's decode, which copies each row through
    its own image memory and then again into numpy, in 0.79x its time for a 1024 x 800
    photo here. None where it refuses the file (truncated, say): Pillow then decodes it
    or names the problem."""
    try:
        arr = simplejpeg.decode_jpeg(data, "GRAY" if mode == "L" else "RGB")
    except ValueError:
        return None
    return arr[:, :, 0] if mode == "L" else arr


def _pil_to_array(im: Image.Image, data: bytes, suffix: str) -> np.ndarray:
    im.load()  # forces a full decode, so truncated files fail here
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im, dtype=np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        return np.clip(arr, 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(im, np.float32)
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
    elif mode not in ("1", "L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if mode == "RGBa" else "RGB")
    arr = np.asarray(im)
    # Pillow narrows 16-bit RGB(A) to 8 bits: read those with pypng / tifffile instead.
    if arr.dtype == np.uint8 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[24] == 16:
        import png

        w, h, rows, _ = png.Reader(bytes=data).asDirect()
        return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(h, w, -1)
    if arr.dtype == np.uint8 and suffix in (".tif", ".tiff"):
        import tifffile

        full = tifffile.imread(io.BytesIO(data))
        if full.dtype == np.uint16:
            return full
    return arr


def _write_png16(path: Path, arr: np.ndarray) -> None:
    import png

    h, w = arr.shape[:2]
    planes = 1 if arr.ndim == 2 else arr.shape[2]
    writer = png.Writer(
        width=w, height=h, bitdepth=16, greyscale=planes in (1, 2), alpha=planes in (2, 4)
    )
    with open(path, "wb") as f:
        writer.write(f, arr.reshape(h, w * planes))


def to_native(rgb: np.ndarray, bits: int) -> np.ndarray:
    """Float RGB in [0, 1] -> uint8 or uint16."""
    scale = 255.0 if bits == 8 else 65535.0
    out = np.clip(np.rint(np.asarray(rgb, np.float32) * scale), 0, scale)
    return out.astype(np.uint8 if bits == 8 else np.uint16)


def write_image(path: str | Path, rgb: np.ndarray, info: ImageInfo | None = None,
                bits: int | None = None) -> None:
    """Write float RGB [0, 1] to `path`, keeping the source's bit depth, alpha and greyness."""
    write_native(path, to_native(rgb, bits or (info.bits if info else 8)), info)


def write_native(path: str | Path, rgb: np.ndarray, info: ImageInfo | None = None) -> None:
    """Write uint8/uint16 RGB to `path` with the source's alpha and greyness, atomically.

    JPEG, BMP and WebP are 8-bit: 16-bit data is narrowed for them.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    arr = np.asarray(rgb)
    alpha = None if info is None else info.alpha
    if suffix in (".jpg", ".jpeg", ".bmp", ".webp") and arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
        alpha = None if alpha is None else (alpha >> 8).astype(np.uint8)
    if info is not None and info.grey:
        arr = np.rint(arr.mean(axis=2, keepdims=True, dtype=np.float32)).astype(arr.dtype)
    if alpha is not None and suffix not in (".jpg", ".jpeg"):  # JPEG has no alpha
        arr = np.concatenate([arr, alpha.astype(arr.dtype)[..., None]], axis=2)
    if arr.shape[2] == 1:
        arr = arr[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part{path.suffix}")
    if suffix in (".tif", ".tiff"):
        import tifffile

        photometric = "minisblack" if arr.ndim == 2 or arr.shape[2] == 2 else "rgb"
        tifffile.imwrite(tmp, arr, photometric=photometric)
    elif arr.dtype == np.uint16 and suffix == ".png":
        _write_png16(tmp, arr)
    else:
        im = Image.fromarray(arr)
        kw = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
        im.save(tmp, format=Image.registered_extensions().get(suffix, "PNG"), **kw)
    tmp.replace(path)  # atomic: a crash never leaves a half-written output


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted, hidden files skipped."""
    folder = Path(folder)
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
