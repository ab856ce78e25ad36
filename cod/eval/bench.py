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

from cod.errors import CodError, UsageError
from cod.eval.baselines import Baseline, bits_per_pixel, encode_at_bpp
from cod.eval.metrics import MetricSuite, as_uint8_rgb, default_patch_size
from cod.eval.schema import METRIC_KEYS, load_results, validate_results  # noqa: F401 - load_results: cod.eval.bench's API
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
            raise UsageError(f"--limit must be at least 1, got {limit}")
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
    output: str | Path | None = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Run every codec over the images; one results dict (CompressAI layout) per RD curve.

    ``images`` is a folder or a list of (name, HxWx3 uint8). Baselines are run at each of
    ``target_bpps``; fixed-rate codecs give one point each. ``suite`` (or the metric options)
    decides what is measured; the FID patch size defaults to :func:`default_patch_size`.

    ``output`` (a folder): every curve is written there as ``NAME.json`` after each of its
    points, so an interrupted run keeps what it measured; with ``resume=True`` the points
    already in those files are taken as they are (same images, crop, metrics and FID patch
    size, else a UsageError) and only the missing ones are run. The progress bar counts
    images x points still to run, with an ETA.
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
        raise UsageError("baseline codecs need target bpps (e.g. --bpp 0.05,0.1,0.2)")
    if any(t <= 0 for t in targets):
        raise UsageError("target bpps must be positive")
    if suite is None:
        patch = fid_patch or default_patch_size([img.shape for _, img in images])
        suite = MetricSuite(metrics, weights_dir=weights_dir, device=device, fid_patch=patch)
    meta_common = {
        "dataset": dataset or "images",
        "num_images": len(images),
        "crop": crop,
        "metrics": list(suite.metrics),
        "device": str(suite.device),
        "time_unit": "s",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    curves: dict[str, dict[str, Any]] = {}
    for codec in codecs:
        name = curve_name(codec)
        if name not in curves:
            curves[name] = _resumed(Path(output) / f"{name}.json", images, suite, meta_common) if (output is not None and resume) else _new_curve()
        curves[name]["codecs"].append(describe(codec))

    def save(name: str) -> None:
        if output is not None and curves[name]["points"]:
            save_results(_assemble(name, curves[name], meta_common), output)

    from tqdm import tqdm

    todo = sum(len(_missing(curves[curve_name(c)], c, targets)) for c in codecs) * len(images)
    bar = tqdm(total=todo, desc="bench", unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for codec in codecs:
            name = curve_name(codec)
            if is_variable_rate(codec):
                _run_baseline(codec, images, targets, suite, bar, curves[name], lambda: save(name))
            elif _missing(curves[name], codec, targets):
                bar.set_description(str(codec.name))
                _run_fixed(codec, images, suite, bar, curves[name])
                save(name)
    finally:
        bar.close()
    return [_assemble(name, c, meta_common) for name, c in curves.items() if c["points"]]


def _new_curve() -> dict[str, Any]:
    return {"codecs": [], "points": [], "notes": {}, "lowest_bpp": None, "merged": []}


def _point_key(codec_name: str, target: float | None) -> tuple[str, float | None]:
    return (codec_name, None if target is None else round(float(target), 9))


def _missing(curve: dict[str, Any], codec: Any, targets: Sequence[float]) -> list[float | None]:
    """The points of ``codec`` not yet in ``curve`` (its targets, or [None] for a fixed-rate codec)."""
    done = {_point_key(p["codec"], p["target_bpp"]) for p in curve["points"]}
    done |= {_point_key(codec_name, t) for codec_name, t in curve["merged"]}
    wanted = list(targets) if is_variable_rate(codec) else [None]
    return [t for t in wanted if _point_key(str(codec.name), t) not in done]


def _resumed(path: Path, images: Sequence[NamedImage], suite: MetricSuite, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The points of an earlier run's results file, to continue it (a new curve if there is none)."""
    curve = _new_curve()
    if not path.exists():
        return curve
    old = load_results(path, strict=True)
    m = old.get("meta", {})
    names = [n for n, _ in images]
    same = {
        "images": all([im["image"] for im in p["images"]] == names for p in old.get("details", [])),
        "crop": m.get("crop") == meta["crop"],
        "metrics": m.get("metrics") == meta["metrics"],
        "FID patch size": not ({"fid", "kid"} & set(suite.metrics)) or m.get("fid_patch_size") in (None, suite.fid_patch),
    }
    differ = [k for k, ok in same.items() if not ok]
    if differ or "details" not in old:
        why = ", ".join(differ) or "no per-point details"
        raise UsageError(f"{path} was measured with other settings ({why}); pass --force to start it over, or another -o")
    for p in old["details"]:
        curve["points"].append(dict(p, fid_patch_size=m.get("fid_patch_size"), fid_patches=m.get("fid_patches_per_set"), notes={}))
    curve["notes"] = dict(m.get("notes", {}))
    curve["lowest_bpp"] = m.get("lowest_bpp")
    curve["merged"] = [tuple(x) for x in m.get("merged_targets", [])]
    return curve


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


def _run_baseline(codec: Baseline, images: Sequence[NamedImage], targets: Sequence[float], suite: MetricSuite, bar, curve: dict[str, Any], save) -> None:
    """Each target in turn; ``save()`` after each. A target whose encodings are those of the
    target below it (AVIF's lowest qualities can give identical files) is no new point."""
    caches: dict[str, dict] = {name: {} for name, _ in images}
    previous: list[Any] | None = None
    previous_point: dict[str, Any] | None = None
    missing = set(_missing(curve, codec, targets))
    done = {_point_key(p["codec"], p["target_bpp"]): p for p in curve["points"]}
    for target in targets:
        if target not in missing:  # resumed: the earlier run's point (or merge) stands
            old = done.get(_point_key(codec.name, target))
            if old is not None:
                previous, previous_point = [im["quality"] for im in old["images"]], old
            continue
        bar.set_description(f"{codec.name} @ {target:g} bpp")

        def encode(name: str, img: np.ndarray, target: float = target):
            enc = encode_at_bpp(codec, img, target, caches[name])
            return enc.data, enc.encode_s, enc.quality, enc.target_reached

        point, qualities = _score_point(images, encode, codec.decompress, suite, bar)
        point["target_bpp"] = target
        point["codec"] = codec.name
        same_files = (point["bpp"], point.get("psnr-rgb")) == (previous_point["bpp"], previous_point.get("psnr-rgb")) if previous_point else False
        if previous is not None and (qualities == previous or same_files):
            curve["merged"].append((codec.name, target))
        else:
            previous, previous_point = qualities, point
            curve["points"].append(point)
        lo = codec.quality_range[0]
        lows = [bits_per_pixel(caches[name][lo][0], *img.shape[:2]) for name, img in images if lo in caches[name]]
        if lows:
            curve["lowest_bpp"] = float(np.mean(lows))
        merged = [t for c, t in curve["merged"] if c == codec.name]
        if merged:
            lowest = f"about {curve['lowest_bpp']:.4g} bpp" if curve["lowest_bpp"] is not None else "unknown"
            curve["notes"][codec.name] = (
                f"target bpp {', '.join(f'{t:g}' for t in merged)} gave the same encodings as a lower target "
                f"(lowest reachable {lowest}): no extra point"
            )
        save()


def _assemble(name: str, curve: dict[str, Any], meta_common: dict[str, Any]) -> dict[str, Any]:
    points = sorted(curve["points"], key=lambda p: p["bpp"])
    notes = dict(curve["notes"])
    for p in points:
        for k, v in p.get("notes", {}).items():
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
            "merged_targets": [list(m) for m in curve["merged"]],
            "notes": notes,
        }
    )
    patch_text = f"; FID/KID on {patch}x{patch} patches" if patch and ("fid" in meta["metrics"] or "kid" in meta["metrics"]) else ""
    details = [
        {k: _finite(v) for k, v in p.items() if k not in ("fid_patch_size", "fid_patches", "notes")}
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
