"""Image files in and out: any mode and bit depth, alpha, ICC profiles, size limits, atomic writes.

Reading gives a :class:`LoadedImage` with float RGB in ``[0, 1]`` (16-bit sources keep their
precision), the alpha channel if any, and what is needed to write the result back in kind.
Writing picks the format from the file extension and never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..core.operators import LUMINANCE
from ..fullres.budget import DEFAULT_MAX_PIXELS  # noqa: F401 - the one limit, re-exported here

logger = logging.getLogger(__name__)

# Larger images are refused unless asked (decompression bombs): ``DEFAULT_MAX_PIXELS``, above.

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
           ".tif": "TIFF", ".tiff": "TIFF"}
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}


class ImageReadError(ValueError):
    """A file that cannot be used as an image or mask; the message is one line naming the file."""


class ImageWriteError(ValueError):
    """An output that cannot be written; the message is one line naming the file."""


class OutputExistsError(ImageWriteError):
    """The output file exists (or appeared while the result was computed) and ``overwrite`` was not given."""


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
        with warnings.catch_warnings(), _pillow_limit(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            if image.width * image.height > max_pixels:
                raise ImageReadError(f"{path}: {image.width}x{image.height} has more than {max_pixels:,} pixels "
                                     "(raise the limit with --max-pixels if you trust this file)")
            if image.width == 0 or image.height == 0:
                raise ImageReadError(f"{path}: image has zero size")
            frames = getattr(image, "n_frames", 1)
            if frames > 1:  # animated GIF / PNG / WebP, multi-page TIFF
                logger.warning("%s: has %d frames (animated or multi-page); only the first is used",
                               path, frames)
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


@contextlib.contextmanager
def _pillow_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) off while a file is opened and
    decoded: ``_open`` checks ``max_pixels`` itself right after the header is read, before any pixel is
    decoded, so ``--max-pixels`` is the one limit, both ways. Restored after."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


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
        with _pillow_limit(max_pixels):
            orientation = Image.open(path).getexif().get(0x0112, 1)
        deep = _orient(deep, orientation)
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
    rgba = np.array(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32)
    rgba /= 255.0  # in place: one float copy of the picture, not two
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
    """Validate an output file path before any work is done; returns it as a ``Path``.

    Raises ``ImageWriteError`` for an unknown extension, a folder, a dangling symbolic link or an
    unwritable folder, and ``OutputExistsError`` for an existing file unless ``overwrite``."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ImageWriteError(f"{path}: unknown output format {path.suffix or '(no extension)'!r}; "
                              f"use one of {', '.join(sorted(FORMATS))}")
    if path.is_dir():
        raise ImageWriteError(f"{path}: is a directory")
    if path.is_symlink() and not path.exists():
        raise ImageWriteError(f"{path}: is a symbolic link to a missing file (remove it or choose another name)")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists (pass --overwrite to replace it)")
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
    BT.601 luminance. 16 bits only where the format holds them (PNG, TIFF). Converted in bands of
    rows (:data:`ENCODE_BAND_PIXELS`), so that no float copy of the whole picture is made.
    """
    alpha = alpha if alpha is not None and fmt in ALPHA_FORMATS else None
    deep = bits == 16 and fmt in SIXTEEN_BIT_FORMATS
    if rgb.ndim != 3:  # a batch (B, H, W, 3)
        return _encode_rows(rgb, alpha, deep, grey)
    height, width = rgb.shape[:2]
    channels = (1 if grey else 3) + (alpha is not None)
    out = np.empty((height, width, channels), dtype=np.uint16 if deep else np.uint8)
    step = max(1, ENCODE_BAND_PIXELS // max(width, 1))
    for top in range(0, height, step):
        rows = slice(top, top + step)
        out[rows] = _encode_rows(rgb[rows], None if alpha is None else alpha[rows], deep, grey)
    return out


# Pixels converted at a time by :func:`encode`.
ENCODE_BAND_PIXELS = 1 << 18


def _encode_rows(rgb: np.ndarray, alpha: np.ndarray | None, deep: bool, grey: bool) -> np.ndarray:
    if grey:
        rgb = (rgb * np.asarray(LUMINANCE, dtype=np.float32)).sum(axis=-1, keepdims=True) / sum(LUMINANCE)
    channels = [rgb] if alpha is None else [rgb, alpha[..., None]]
    values = np.clip(np.concatenate(channels, axis=-1), 0, 1)
    if deep:
        return np.round(values * 65535).astype(np.uint16)
    return np.round(values * 255).astype(np.uint8)


TEMP_PREFIX = ".cmedit-"
TEMP_SUFFIX = ".tmp"


def temporary_name(path: Path) -> str:
    """``.cmedit-<pid>-<random>.<name>.tmp``: a temporary sibling of ``path`` that names the process that
    made it, so that a later run can remove it once that process is gone (:func:`remove_stale_temporaries`)."""
    return f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}.{path.name}{TEMP_SUFFIX}"


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete cmedit's own temporary files (``.cmedit-<pid>-*.tmp``) in ``folder`` whose process no longer
    runs on this machine (left by a kill or a power cut); returns what was removed. Other files are never
    touched."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
            continue
        pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():  # a folder being written (cmedit convert)
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its files
    return True


_CLEANED: set[str] = set()


def write_image(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None, *, bits: int = 8,
                grey: bool = False, icc_profile: bytes | None = None, quality: int = 95,
                overwrite: bool = False) -> None:
    """Write float RGB (+ alpha) to ``path`` in the format of its extension, atomically.

    The image is written to a temporary sibling (``.cmedit-<pid>-...tmp``) first. Without ``overwrite`` it
    is then hard-linked to ``path``, which fails if ``path`` exists at that moment, so two processes
    writing one name never replace each other's file: the later one gets ``OutputExistsError``. With
    ``overwrite`` it is renamed over ``path``. Either way ``path`` is complete or absent, never partial.
    A ``path`` that is a symbolic link to nothing is refused (``ImageWriteError``). Every failure,
    including the temporary file's creation (read-only folder, full disk, no inodes), is an
    ``ImageWriteError`` naming ``path``.
    """
    path = Path(path)
    fmt = FORMATS[path.suffix.lower()]
    if path.is_symlink() and not path.exists():
        raise ImageWriteError(f"{path}: is a symbolic link to a missing file (remove it or choose another name)")
    if not overwrite and path.exists():
        raise OutputExistsError(f"{path}: exists")
    array = encode(rgb, alpha, bits, grey, fmt)
    if array.shape[-1] == 1:
        array = array[..., 0]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = str(path.parent.absolute())
        if folder not in _CLEANED:
            _CLEANED.add(folder)
            remove_stale_temporaries(folder)
        tmp = path.parent / temporary_name(path)
        with open(tmp, "xb") as file:
            if array.dtype == np.uint16 and array.ndim == 3:
                file.write(_encode_16bit_colour(array, path.suffix))
            else:
                image = Image.fromarray(array)
                options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
                if icc_profile and fmt != "BMP":
                    options["icc_profile"] = icc_profile
                image.save(file, format=fmt, **options)
            file.flush()
            os.fsync(file.fileno())
        new_file_permissions(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    except FileExistsError:
        raise OutputExistsError(f"{path}: exists (written meanwhile by another process)") from None
    except OSError as error:
        raise ImageWriteError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_file_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write a non-image file (JSON, a training state) as images are written: ``write(tmp)`` fills a
    temporary sibling, which then replaces ``path`` whole, so ``path`` is never partial. ``OSError``
    propagates (the caller names the file); the temporary file never stays behind."""
    path = Path(path)
    tmp = path.parent / temporary_name(path)
    try:
        write(tmp)
        new_file_permissions(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_folder_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write a folder (a model's ``save_pretrained``) as files are written: ``write(tmp)`` fills a temporary
    sibling, swapped in for ``path`` only once complete; a failure leaves ``path`` as it was (the old
    folder is put back) and no temporary folder behind. Exceptions propagate."""
    import shutil

    path = Path(path)
    parent = path.absolute().parent
    remove_stale_temporaries(parent)
    tmp, old = parent / temporary_name(path), parent / temporary_name(path)
    try:
        write(tmp)
        if path.exists():  # the old folder out of the way first
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():
                os.replace(old, path)  # put the old folder back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Give ``tmp``'s finished file the name ``path`` unless ``path`` exists (``FileExistsError``), atomically."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (FAT, some network shares): O_EXCL claims the name
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        os.close(fd)
        os.replace(tmp, path)


def new_file_permissions(path: str | os.PathLike) -> None:
    """Give a ``tempfile.mkstemp`` file (created 0600) the mode a plain new file gets: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _encode_16bit_colour(array: np.ndarray, suffix: str) -> bytes:
    import cv2

    code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, data = cv2.imencode(suffix.lower(), cv2.cvtColor(array, code))
    if not ok:
        raise OSError(f"cannot encode 16-bit {suffix}")
    return data.tobytes()
