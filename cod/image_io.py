"""Reading images robustly and writing files atomically."""
from __future__ import annotations

import os
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from cod.errors import ImageError, UsageError
from cod.limits import DEFAULT_MAX_PIXELS, pixels_text

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")


def to_rgb_array(img: Image.Image, name: str = "image") -> np.ndarray:
    """A PIL image of any mode -> HxWx3 uint8 (alpha dropped with a warning, 16-bit scaled)."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        warnings.warn(f"{name}: alpha channel dropped", stacklevel=2)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        gray = np.clip(np.round(arr * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def not_a_file(path: Path) -> str:
    """Why ``path`` is not a readable regular file, in a few words."""
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link (to {os.readlink(path)})"
    if path.is_dir():
        return "is a directory"
    if path.exists():
        return "not a regular file"
    return "no such file"


_PILLOW_LIMIT = threading.Lock()


@contextmanager
def _without_pillow_limit() -> Iterator[None]:
    """Pillow's own decompression-bomb check off for one open: read_image checks the size
    exactly against its ``max_pixels`` (which may be above Pillow's limit) before decoding."""
    with _PILLOW_LIMIT:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, with one-line errors for bad input; images above
    ``max_pixels`` (None: no limit) are refused before their pixels are decoded."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {not_a_file(path)}")
    try:
        with _without_pillow_limit(), Image.open(path) as img:
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(f"{path}: image is {w}x{h} ({pixels_text(w * h)}), above the limit of {pixels_text(max_pixels)} (--max-pixels, $COD_MAX_PIXELS)")
            img.load()
            return to_rgb_array(img, path.name)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: image too large (decompression bomb limit; --max-pixels)") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds
        raise ImageError(f"{path}: cannot read image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None


def as_rgb_array(image) -> np.ndarray:
    """Accept a path, PIL image, HxWx3/HxW uint8 array or (3,H,W) float tensor in [0,1]."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    import torch

    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ImageError(f"expected a (3,H,W) tensor, got shape {tuple(t.shape)}")
        if t.dtype.is_floating_point:
            t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        image = t.expand(3, -1, -1).permute(1, 2, 0).numpy()
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"expected an HxWx3 image array, got shape {arr.shape}")
    if arr.shape[2] == 4:
        warnings.warn("alpha channel dropped", stacklevel=2)
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        raise ImageError(f"expected a uint8 image array, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _publish(tmp: str, path: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` onto ``path``; without ``overwrite`` never replace a file that
    exists, even one created meanwhile (a hard link fails on an existing name)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path} exists (not replaced)") from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise UsageError(f"{path} exists (not replaced)") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """The one atomic writer: yields a temporary path in the target folder, renamed onto
    ``path`` when the block ends without error and deleted otherwise, so a file is never left
    half-written. ``overwrite=False``: an existing ``path`` is an error and stays untouched.
    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        _publish(tmp, path, overwrite)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path, overwrite) as tmp:
        tmp.write_bytes(data)


def write_image(path: str | Path, array: np.ndarray, overwrite: bool = True) -> None:
    """Save an HxWx3 uint8 image atomically; the format follows the extension (PNG if unknown)."""
    import io

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    buf = io.BytesIO()
    img = Image.fromarray(np.asarray(array, dtype=np.uint8), "RGB")
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    img.save(buf, format=fmt, **kwargs)
    atomic_write_bytes(path, buf.getvalue(), overwrite)


@dataclass
class Inputs:
    """What a batch command was given (:func:`scan_inputs`)."""

    files: list[Path]  # to process: given directly, or named like the inputs sought in a folder
    skipped: list[Path]  # other files inside the folders (reported, not processed)


def scan_inputs(inputs: list[str | Path], extensions: tuple[str, ...], recursive: bool = True) -> Inputs:
    """Files given directly, plus every entry of the given folders named with one of
    ``extensions`` (sorted), whatever it is, so that processing a broken link, or (when not
    ``recursive``) a sub-folder named ``x.png``, fails with a message instead of vanishing
    (``recursive``: sub-folders are walked, whatever their names). Other files in the folders
    come back as ``skipped``."""
    files: list[Path] = []
    skipped: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            files.append(p)
            continue
        for f in sorted(p.rglob("*") if recursive else p.iterdir()):
            if recursive and f.is_dir():
                continue
            if f.suffix.lower() in extensions:
                files.append(f)
            elif not f.is_dir():
                skipped.append(f)
    return Inputs(files, skipped)


#: Folder names of evaluation sets (never trained or fitted on) and Kodak's own file-name prefix.
EVALUATION_SETS = ("kodak",)
EVALUATION_PREFIXES = ("kodim",)


def evaluation_image(path: str | Path, sets: Sequence[str] = EVALUATION_SETS) -> bool:
    """Whether ``path`` belongs to an evaluation set: a folder on its (resolved) path is named
    one of ``sets`` (any case), or its file name starts with Kodak's ``kodim``. The one rule
    of training (cod.train.data) and of `cod fit-prior` (cod.priors)."""
    p = Path(path)
    wanted = {s.lower() for s in sets}
    return any(part.lower() in wanted for part in (*p.parts, *p.resolve().parts)) or p.name.lower().startswith(EVALUATION_PREFIXES)


def list_images(inputs: list[str | Path], recursive: bool = True) -> list[Path]:
    """Files given directly, plus the images inside given folders (sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(f for f in it if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(p)
    return out
