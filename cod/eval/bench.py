"""Run codecs over an image set and collect rate-distortion points (CompressAI's results layout).

Two kinds of codec are accepted:

* fixed rate (our codec): ``.name``, ``.compress(img) -> bytes``, ``.decompress(bytes) -> image``;
  one RD point each. Codecs named ``FAMILY-RATE`` (``codlite-0.0312``) share the curve ``FAMILY``.
* variable rate (a :class:`~cod.eval.baselines.Baseline`): ``.compress(img, quality)``; one RD
  point per target bpp, each image hit at the target from below.

The rate is always the real compressed byte length: bpp = 8 * bytes / (H * W), averaged over images.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cod.errors import CodError
from cod.eval.baselines import Baseline, bits_per_pixel, encode_at_bpp
from cod.eval.metrics import METRIC_KEYS, MetricSuite, as_uint8_rgb, default_patch_size
from cod.eval.schema import validate_results
from cod.image_io import atomic_write_bytes

#: Series written in ``results`` (the schema's required ones plus LPIPS-VGG and KID).
SERIES_KEYS: tuple[str, ...] = (
    "bpp", "psnr-rgb", "ms-ssim-rgb", "delta-e", "lpips", "lpips-vgg", "dists", "fid", "kid", "encoding_time", "decoding_time",
)

NamedImage = tuple[str, np.ndarray]


# ----------------------------------------------------------------------------- images
def center_crop(img: np.ndarray, size: int | None) -> np.ndarray:
    """Centre crop to size x size (each side kept whole where it is shorter than ``size``)."""
    if size is None:
        return img
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y : y + ch, x : x + cw])


def load_images(source: str | Path, limit: int | None = None, crop: int | None = None) -> list[NamedImage]:
    """The images of a folder (sorted, recursive) as (file name, HxWx3 uint8), optionally limited and centre-cropped."""
    from cod.image_io import list_images, read_image

    src = Path(source)
    if not src.exists():
        raise CodError(f"{src}: no such folder")
    files = list_images([src])
    if not files:
        raise CodError(f"{src}: no images found")
    if limit is not None:
        if limit < 1:
            raise CodError(f"--limit must be at least 1, got {limit}")
        files = files[:limit]
    return [(str(f.relative_to(src)) if src.is_dir() else f.name, center_crop(read_image(f), crop)) for f in files]


# ----------------------------------------------------------------------------- codecs
def is_variable_rate(codec: Any) -> bool:
    """Whether the codec takes a quality knob (a baseline) rather than having one fixed rate."""
    return isinstance(codec, Baseline) or hasattr(codec, "quality_range")


def curve_name(codec: Any) -> str:
    """The RD curve a codec's points belong to: ``codlite-0.0312`` -> ``codlite``; baselines keep their name."""
    name = str(getattr(codec, "name", type(codec).__name__))
    if is_variable_rate(codec):
        return name
    m = re.fullmatch(r"(.+)-(\d+(?:\.\d+)?)", name)
    return m.group(1) if m else name


def describe(codec: Any) -> str:
    """A codec's description: its ``describe()`` if it has one, else its name and device."""
    if hasattr(codec, "describe"):
        return str(codec.describe())
    device = getattr(codec, "device", None)
    return f"{getattr(codec, 'name', type(codec).__name__)}" + (f" on {device}" if device is not None else "")


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


# ----------------------------------------------------------------------------- one point
def _score_point(
    images: Sequence[NamedImage],
    encode,
    decode,
    suite: MetricSuite,
    bar,
) -> tuple[dict[str, Any], list[Any]]:
    """Encode/decode every image, score it; returns the point and the per-image qualities."""
    suite.reset()
    rows: list[dict[str, Any]] = []
    qualities: list[Any] = []
    for name, img in images:
        data, enc_s, quality, reached = encode(name, img)
        h, w = img.shape[:2]
        t0 = time.perf_counter()
        rec = as_uint8_rgb(decode(data), f"{name}: decoded image")
        dec_s = time.perf_counter() - t0
        if rec.shape != img.shape:
            raise CodError(f"{name}: decoded image is {rec.shape[1]}x{rec.shape[0]}, expected {w}x{h}")
        scores = suite.add(img, rec)
        row = {
            "image": name,
            "height": h,
            "width": w,
            "bytes": len(data),
            "bpp": bits_per_pixel(data, h, w),
            "quality": quality,
            "target_reached": reached,
            "encoding_time": enc_s,
            "decoding_time": dec_s,
        }
        row.update({k: _finite(v) for k, v in scores.items()})
        rows.append(row)
        qualities.append(quality)
        if bar is not None:
            bar.update(1)
    summary = suite.summary()
    point: dict[str, Any] = {
        "bpp": _mean([r["bpp"] for r in rows]),
        "encoding_time": _mean([r["encoding_time"] for r in rows]),
        "decoding_time": _mean([r["decoding_time"] for r in rows]),
        **summary["metrics"],
        "kid_std": summary["kid_std"],
        "fid_patch_size": summary["fid_patch_size"],
        "fid_patches": summary["fid_patches"],
        "notes": summary["notes"],
        "images": rows,
    }
    return point, qualities


# ----------------------------------------------------------------------------- bench
def bench(
    codecs: Iterable[Any],
    images: str | Path | Sequence[NamedImage],
    target_bpps: Sequence[float] | None = None,
    *,
    metrics: Iterable[str] = METRIC_KEYS,
    suite: MetricSuite | None = None,
    weights_dir: str | Path | None = None,
    device: str = "cpu",
    fid_patch: int | None = None,
    limit: int | None = None,
    crop: int | None = None,
    dataset: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every codec over the images; one results dict (CompressAI layout) per RD curve.

    ``images`` is a folder or a list of (name, HxWx3 uint8). Baselines are run at each of
    ``target_bpps``; fixed-rate codecs give one point each. ``suite`` (or the metric options)
    decides what is measured; the FID patch size defaults to :func:`default_patch_size`.
    """
    if isinstance(images, (str, Path)):
        dataset = dataset or str(images)
        images = load_images(images, limit=limit, crop=crop)
    else:
        images = list(images)[:limit] if limit else list(images)
    if not images:
        raise CodError("no images to benchmark")
    if len({n for n, _ in images}) != len(images):
        raise CodError("image names must be unique")
    codecs = list(codecs)
    if not codecs:
        raise CodError("no codecs to benchmark")
    targets = sorted(float(t) for t in (target_bpps or []))
    if any(is_variable_rate(c) for c in codecs) and not targets:
        raise CodError("baseline codecs need target bpps (e.g. --bpp 0.05,0.1,0.2)")
    if any(t <= 0 for t in targets):
        raise CodError("target bpps must be positive")
    if suite is None:
        patch = fid_patch or default_patch_size([img.shape for _, img in images])
        suite = MetricSuite(metrics, weights_dir=weights_dir, device=device, fid_patch=patch)

    from tqdm import tqdm

    total = sum(len(targets) if is_variable_rate(c) else 1 for c in codecs) * len(images)
    bar = tqdm(total=total, desc="bench", unit="img", file=sys.stderr, disable=not progress)
    curves: dict[str, dict[str, Any]] = {}
    try:
        for codec in codecs:
            name = curve_name(codec)
            bar.set_description(str(getattr(codec, "name", name)))
            curve = curves.setdefault(name, {"codecs": [], "points": [], "notes": {}, "lowest_bpp": None})
            curve["codecs"].append(describe(codec))
            if is_variable_rate(codec):
                _run_baseline(codec, images, targets, suite, bar, curve)
            else:
                _run_fixed(codec, images, suite, bar, curve)
    finally:
        bar.close()
    meta_common = {
        "dataset": dataset or "images",
        "num_images": len(images),
        "crop": crop,
        "metrics": list(suite.metrics),
        "device": str(suite.device),
        "time_unit": "s",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return [_assemble(name, c, meta_common) for name, c in curves.items()]


def _run_fixed(codec: Any, images: Sequence[NamedImage], suite: MetricSuite, bar, curve: dict[str, Any]) -> None:
    def encode(_name: str, img: np.ndarray):
        t0 = time.perf_counter()
        data = codec.compress(img)
        secs = time.perf_counter() - t0
        if not isinstance(data, (bytes, bytearray)):
            raise CodError(f"{codec.name}: compress() returned {type(data).__name__}, expected bytes")
        return bytes(data), secs, None, None

    point, _ = _score_point(images, encode, codec.decompress, suite, bar)
    point["target_bpp"] = None
    point["codec"] = str(codec.name)
    curve["points"].append(point)


def _run_baseline(codec: Baseline, images: Sequence[NamedImage], targets: Sequence[float], suite: MetricSuite, bar, curve: dict[str, Any]) -> None:
    caches: dict[str, dict] = {name: {} for name, _ in images}
    previous: list[Any] | None = None
    previous_point: dict[str, Any] | None = None
    merged: list[float] = []
    for target in targets:

        def encode(name: str, img: np.ndarray, target: float = target):
            enc = encode_at_bpp(codec, img, target, caches[name])
            return enc.data, enc.encode_s, enc.quality, enc.target_reached

        point, qualities = _score_point(images, encode, codec.decompress, suite, bar)
        point["target_bpp"] = target
        point["codec"] = codec.name
        same_files = (point["bpp"], point.get("psnr-rgb")) == (previous_point["bpp"], previous_point.get("psnr-rgb")) if previous_point else False
        if previous is not None and (qualities == previous or same_files):
            merged.append(target)  # same encodings as the lower target (AVIF's lowest qualities can give identical files): not a new point
            continue
        previous, previous_point = qualities, point
        curve["points"].append(point)
    lo = codec.quality_range[0]
    lows = [bits_per_pixel(caches[name][lo][0], *img.shape[:2]) for name, img in images if lo in caches[name]]
    if lows:
        curve["lowest_bpp"] = float(np.mean(lows))
    if merged:
        curve["notes"][codec.name] = (
            f"target bpp {', '.join(f'{t:g}' for t in merged)} gave the same encodings as a lower target "
            f"(lowest reachable about {curve['lowest_bpp']:.4g} bpp): no extra point"
        )


def _assemble(name: str, curve: dict[str, Any], meta_common: dict[str, Any]) -> dict[str, Any]:
    points = sorted(curve["points"], key=lambda p: p["bpp"])
    notes = dict(curve["notes"])
    for p in points:
        for k, v in p.pop("notes").items():
            notes.setdefault(k, v)
    results = {k: [_finite(p.get(k)) for p in points] for k in SERIES_KEYS}
    patch = next((p["fid_patch_size"] for p in points if p["fid_patch_size"]), None)
    meta = dict(meta_common)
    meta.update(
        {
            "fid_patch_size": patch,
            "fid_patches_per_set": next((p["fid_patches"] for p in points if p["fid_patch_size"]), None),
            "target_bpp": [p["target_bpp"] for p in points],
            "lowest_bpp": curve["lowest_bpp"],
            "notes": notes,
        }
    )
    patch_text = f"; FID/KID on {patch}x{patch} patches" if patch and ("fid" in meta["metrics"] or "kid" in meta["metrics"]) else ""
    details = [
        {k: _finite(v) for k, v in p.items() if k not in ("fid_patch_size", "fid_patches")}
        for p in points
    ]
    out = {
        "name": name,
        "description": "; ".join(dict.fromkeys(curve["codecs"])) + f"; {meta['dataset']}, {meta['num_images']} images{patch_text}",
        "results": results,
        "meta": meta,
        "details": details,
    }
    validate_results(out)
    return out


# ----------------------------------------------------------------------------- files
def save_results(results: Mapping[str, Any], out: str | Path) -> Path:
    """Write one results dict as JSON; ``out`` is a folder (``NAME.json`` inside) or a .json path."""
    validate_results(results)
    out = Path(out)
    path = out if out.suffix == ".json" else out / f"{results['name']}.json"
    atomic_write_bytes(path, (json.dumps(results, indent=1, allow_nan=False) + "\n").encode())
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CodError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise CodError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise CodError(f"{path}: not a results object")
    try:
        validate_results(data)
    except CodError as exc:
        raise CodError(f"{path}: {exc}") from None
    return data
