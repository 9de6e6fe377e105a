"""Image files in and out: any mode and bit depth, alpha, ICC profiles, size limits, atomic writes.

Reading gives a :class:`LoadedImage` with float RGB in ``[0, 1]`` (16-bit sources keep their
precision), the alpha channel if any, and what is needed to write the result back in kind.
Writing picks the format from the file extension and never leaves a partial file behind.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..core.operators import LUMINANCE

# Refuse larger images unless asked (decompression bombs; a 8000 x 8000 photo is 64 MP).
DEFAULT_MAX_PIXELS = 64_000_000

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
           ".tif": "TIFF", ".tiff": "TIFF"}
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}


class ImageReadError(ValueError):
    """A file that cannot be used as an image or mask; the message is one line naming the file."""


class ImageWriteError(ValueError):
    """An output that cannot be written; the message is one line naming the file."""


@dataclass
class LoadedImage:
    """An image file decoded for editing.

    ``rgb``: ``(H, W, 3)`` float32 in ``[0, 1]`` (greyscale replicated); ``alpha``: ``(H, W)``
    float32 in ``[0, 1]`` or ``None``; ``bits``: 8 or 16 per channel in the source; ``grey``: the
    source had a single colour channel; ``icc_profile``: the source's RGB/grey ICC profile, if any.
    """

    path: Path
    rgb: np.ndarray
    alpha: np.ndarray | None
    bits: int
    grey: bool
    icc_profile: bytes | None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, as PIL reports sizes."""
        return self.rgb.shape[1], self.rgb.shape[0]

    def on_white(self) -> np.ndarray:
        """``rgb`` composited on white where ``alpha`` is below 1 (``rgb`` itself for an opaque image)."""
        if self.alpha is None:
            return self.rgb
        alpha = self.alpha[..., None]
        return self.rgb * alpha + (1 - alpha)


def _open(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            if image.width * image.height > max_pixels:
                raise ImageReadError(f"{path}: {image.width}x{image.height} has more than {max_pixels:,} pixels "
                                     "(raise the limit with --max-pixels if you trust this file)")
            if image.width == 0 or image.height == 0:
                raise ImageReadError(f"{path}: image has zero size")
            image.load()
            return ImageOps.exif_transpose(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file that can be read") from None
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: refused, too many pixels (raise the limit with --max-pixels)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageReadError(f"{path}: cannot read image ({str(error).splitlines()[0] if str(error) else error!r})"
                             ) from None


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an ``(H, W, C)`` array, as ``ImageOps.exif_transpose`` does."""
    transforms = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms.get(orientation, lambda a: a)(array))


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as file:
        header = file.read(25)
    if header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR":
        return header[24]
    return 8


def _read_16bit_colour(path: Path) -> np.ndarray | None:
    """16-bit RGB(A) PNGs, which PIL reduces to 8 bits: read them with OpenCV, as ``(H, W, 3|4)`` uint16."""
    if _png_bit_depth(path) != 16:
        return None
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.ndim != 3 or array.dtype != np.uint16:
        return None
    return cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA if array.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file of any mode (1, L, LA, P, RGB, RGBA, CMYK, I;16, ...) with EXIF orientation.

    Raises ``ImageReadError`` with one line naming the file for anything that is not a readable image.
    """
    path = Path(path)
    image = _open(path, max_pixels)
    icc = image.info.get("icc_profile")
    deep = _read_16bit_colour(path) if image.mode in ("RGB", "RGBA") else None
    if deep is not None:
        deep = _orient(deep, Image.open(path).getexif().get(0x0112, 1))
        values = deep.astype(np.float32) / 65535.0
        rgb, alpha = values[..., :3], values[..., 3] if values.shape[2] == 4 else None
        return LoadedImage(path, np.ascontiguousarray(rgb), alpha, 16, False, icc)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode != "F" else max(float(array.max()), 1.0)
        grey = np.clip(array / top, 0, 1)
        return LoadedImage(path, np.repeat(grey[..., None], 3, axis=2), None, 16, True, icc)
    if image.mode == "CMYK":
        image = _cmyk_to_rgb(image, icc)
        icc = None  # the source's profile described CMYK; the result is sRGB
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info)
    grey = image.mode in ("1", "L", "LA", "La", "I", "F") or (
        image.mode == "P" and _palette_is_grey(image))
    rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3] if has_alpha else None
    return LoadedImage(path, np.ascontiguousarray(rgba[..., :3]), alpha, 8, grey, icc)


def _palette_is_grey(image: Image.Image) -> bool:
    palette = np.asarray(image.convert("RGB"))
    return bool((palette[..., 0] == palette[..., 1]).all() and (palette[..., 1] == palette[..., 2]).all())


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """CMYK to sRGB through the embedded profile when there is one, else PIL's formula."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: PIL's own conversion below is the documented fallback
    return image.convert("RGB")


def read_mask(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a mask file as a PIL image; ``cmedit.io.tensors.masks_to_tensor`` applies the convention."""
    return _open(Path(path), max_pixels)


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Validate an output file path before any work is done; returns it as a ``Path``."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ImageWriteError(f"{path}: unknown output format {path.suffix or '(no extension)'!r}; "
                              f"use one of {', '.join(sorted(FORMATS))}")
    if path.is_dir():
        raise ImageWriteError(f"{path}: is a directory")
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path}: already exists (pass --overwrite to replace it)")
    folder = _existing_parent(path)
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ImageWriteError(f"{path}: folder {folder} is not writable")
    return path


def _existing_parent(path: Path) -> Path:
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def encode(rgb: np.ndarray, alpha: np.ndarray | None, bits: int, grey: bool, fmt: str) -> np.ndarray:
    """Float ``(H, W, 3)`` in ``[0, 1]`` (+ alpha) to the integer array to write: ``(H, W[, C])``.

    8-bit values are ``round(255 x)``, as diffusers' ``numpy_to_pil``; greyscale output is the
    BT.601 luminance. 16 bits only where the format holds them (PNG, TIFF).
    """
    if grey:
        rgb = (rgb * np.asarray(LUMINANCE, dtype=np.float32)).sum(axis=-1, keepdims=True) / sum(LUMINANCE)
    channels = [rgb] if alpha is None or fmt not in ALPHA_FORMATS else [rgb, alpha[..., None]]
    values = np.clip(np.concatenate(channels, axis=-1), 0, 1)
    if bits == 16 and fmt in SIXTEEN_BIT_FORMATS:
        return np.round(values * 65535).astype(np.uint16)
    return np.round(values * 255).astype(np.uint8)


def write_image(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None, *, bits: int = 8,
                grey: bool = False, icc_profile: bytes | None = None, quality: int = 95) -> None:
    """Write float RGB (+ alpha) to ``path`` in the format of its extension, atomically.

    A temporary file in the same folder is renamed over ``path`` only once fully written.
    """
    path = Path(path)
    fmt = FORMATS[path.suffix.lower()]
    array = encode(rgb, alpha, bits, grey, fmt)
    if array.shape[-1] == 1:
        array = array[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        if array.dtype == np.uint16 and array.ndim == 3:
            _write_16bit_colour(tmp, array)
        else:
            image = Image.fromarray(array)
            options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
            if icc_profile and fmt != "BMP":
                options["icc_profile"] = icc_profile
            image.save(tmp, format=fmt, **options)
        new_file_permissions(tmp)
        os.replace(tmp, path)
    except OSError as error:
        raise ImageWriteError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def new_file_permissions(path: str | os.PathLike) -> None:
    """Give a ``tempfile.mkstemp`` file (created 0600) the mode a plain new file gets: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _write_16bit_colour(path: str, array: np.ndarray) -> None:
    import cv2

    code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, data = cv2.imencode(Path(path).suffix, cv2.cvtColor(array, code))
    if not ok:
        raise OSError(f"cannot encode 16-bit {Path(path).suffix}")
    Path(path).write_bytes(data.tobytes())
