"""The results files: the metric names, the JSON Schema of what ``cod bench`` writes
(CompressAI layout plus extras), and the lenient reading of any CompressAI-layout curve.

The schema is printed in docs/evaluation.md; :func:`validate_results` checks a dict against it
(jsonschema) and that every list in ``results`` has one value per point. ``cod plot`` and
``cod bdrate`` read curves with :func:`read_curve` instead, which asks only for ``bpp`` (and
:func:`series`, for the metric in use): CompressAI's own published files
(``results/image/kodak/*.json``) have no LPIPS or FID, and the older ones name PSNR and MS-SSIM
``psnr`` and ``ms-ssim`` (:data:`KEY_ALIASES`). No torch here.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from cod.errors import CodError

#: Every metric key, in the order of the results JSON (CompressAI names for PSNR / MS-SSIM).
METRIC_KEYS: tuple[str, ...] = ("psnr-rgb", "ms-ssim-rgb", "delta-e", "lpips", "lpips-vgg", "dists", "fid", "kid")
#: Metrics computed per image (then averaged); the others are computed over the whole set.
PER_IMAGE_KEYS: tuple[str, ...] = ("psnr-rgb", "ms-ssim-rgb", "delta-e", "lpips", "lpips-vgg", "dists")
SET_KEYS: tuple[str, ...] = ("fid", "kid")
#: Metrics where a smaller value is better (distances); PSNR and MS-SSIM are higher-is-better.
LOWER_IS_BETTER: frozenset[str] = frozenset({"delta-e", "lpips", "lpips-vgg", "dists", "fid", "kid"})
#: Older CompressAI result files (before v1.2) name the RGB PSNR and MS-SSIM without "-rgb".
KEY_ALIASES: dict[str, str] = {"psnr": "psnr-rgb", "ms-ssim": "ms-ssim-rgb"}
#: The classical baseline codecs (cod.eval.baselines; each also as ``NAME-downK``): the curves
#: ``cod bench`` writes as ``NAME.json``.
BASELINE_NAMES: tuple[str, ...] = ("jpeg", "webp", "avif", "jpegxl", "jpeg2000", "hevc")
#: The environment variable naming the folder of the LPIPS / DISTS backbone files (cod.eval.metrics).
WEIGHTS_ENV = "COD_WEIGHTS_DIR"

_NUM_OR_NULL = {"type": ["number", "null"]}
_SERIES = {"type": "array", "items": _NUM_OR_NULL, "minItems": 1}

#: Required series in ``results``; each is a list with one entry per RD point, sorted by bpp.
RESULT_KEYS: tuple[str, ...] = (
    "bpp",
    "psnr-rgb",
    "ms-ssim-rgb",
    "lpips",
    "dists",
    "fid",
    "encoding_time",
    "decoding_time",
)

RESULTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cod bench results (one codec, one RD curve)",
    "type": "object",
    "required": ["name", "description", "results"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "results": {
            "type": "object",
            "required": list(RESULT_KEYS),
            "properties": {
                "bpp": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1},
                **{k: _SERIES for k in RESULT_KEYS if k != "bpp"},
                "lpips-vgg": _SERIES,
                "kid": _SERIES,
            },
            "additionalProperties": _SERIES,
        },
        "meta": {
            "type": "object",
            "properties": {
                "dataset": {"type": "string"},
                "num_images": {"type": "integer", "minimum": 1},
                "crop": {"type": ["integer", "null"]},
                "fid_patch_size": {"type": ["integer", "null"]},
                "fid_patches_per_set": {"type": ["integer", "null"]},
                "metrics": {"type": "array", "items": {"type": "string"}},
                "device": {"type": "string"},
                "time_unit": {"const": "s"},
                "notes": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["bpp", "images"],
                "properties": {
                    "target_bpp": _NUM_OR_NULL,
                    "bpp": {"type": "number"},
                    "kid_std": _NUM_OR_NULL,
                    "images": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["image", "height", "width", "bytes", "bpp"],
                            "properties": {
                                "image": {"type": "string"},
                                "height": {"type": "integer", "minimum": 1},
                                "width": {"type": "integer", "minimum": 1},
                                "bytes": {"type": "integer", "minimum": 1},
                                "bpp": {"type": "number", "exclusiveMinimum": 0},
                                "quality": _NUM_OR_NULL,
                                "target_reached": {"type": ["boolean", "null"]},
                                "encoding_time": {"type": "number", "minimum": 0},
                                "decoding_time": {"type": "number", "minimum": 0},
                            },
                            "additionalProperties": _NUM_OR_NULL,
                        },
                    },
                },
            },
        },
    },
}


def validate_results(results: Mapping[str, Any]) -> None:
    """Raise CodError (one line) if ``results`` does not follow :data:`RESULTS_SCHEMA`."""
    import jsonschema

    try:
        jsonschema.validate(instance=results, schema=RESULTS_SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise CodError(f"results JSON invalid at {where}: {exc.message}") from None
    series = results["results"]
    n = len(series["bpp"])
    for key, values in series.items():
        if len(values) != n:
            raise CodError(f"results JSON invalid: results/{key} has {len(values)} values but bpp has {n}")
    details = results.get("details")
    if details is not None and len(details) != n:
        raise CodError(f"results JSON invalid: details has {len(details)} points but bpp has {n}")


def read_curve(data: Any, where: str | None = None) -> dict[str, Any]:
    """A results dict in CompressAI's layout (``{"name", "results": {"bpp": [...], METRIC: [...]}}``),
    as ``cod bench`` writes it or as CompressAI publishes it: only ``results.bpp`` is required
    (positive numbers); ``psnr`` / ``ms-ssim`` are read as ``psnr-rgb`` / ``ms-ssim-rgb``; a
    missing ``name`` is ``where`` (the file). Each metric is checked when used (:func:`series`)."""
    if where is None:
        where = str(data.get("name") or "results") if isinstance(data, Mapping) else "results"
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), Mapping):
        raise CodError(f"{where}: not a results file (expected an object with a 'results' object, as CompressAI and `cod bench` write)")
    results = dict(data["results"])
    bpp = results.get("bpp")
    if not isinstance(bpp, list) or not bpp:
        raise CodError(f"{where}: results has no 'bpp' list")
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 for b in bpp):
        raise CodError(f"{where}: results/bpp must be positive numbers")
    for old, new in KEY_ALIASES.items():
        if old in results and new not in results:
            results[new] = results[old]
    curve = dict(data, results=results)
    curve["name"] = str(data.get("name") or where)
    return curve


def series(curve: Mapping[str, Any], key: str, where: str | None = None) -> list[float | None]:
    """The values of one metric (or time) of a curve from :func:`read_curve`, one per bpp
    point (None where missing); CodError naming the key when the curve has no such list."""
    where = where or str(curve.get("name", "results"))
    res = curve["results"]
    if key not in res:
        keys = [k for k in METRIC_KEYS if k in res] + [k for k in res if k not in METRIC_KEYS and k != "bpp" and k not in KEY_ALIASES]
        has = ", ".join(keys) or "nothing but bpp"
        raise CodError(f"{where}: no {key!r} in results (has {has})")
    values = res[key]
    if not isinstance(values, list) or len(values) != len(res["bpp"]):
        raise CodError(f"{where}: results/{key} must be a list with one value per bpp point ({len(res['bpp'])})")
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        raise CodError(f"{where}: results/{key} must hold numbers (or null)")
    return values


def load_results(path: str | Path, strict: bool = False) -> dict[str, Any]:
    """Read a results JSON file: any CompressAI-layout curve (:func:`read_curve`), or with
    ``strict=True`` a file as ``cod bench`` writes it (:func:`validate_results`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CodError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise CodError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not strict:
        curve = read_curve(data, str(path))
        if not data.get("name"):
            curve["name"] = path.stem
        return curve
    if not isinstance(data, dict):
        raise CodError(f"{path}: not a results object")
    try:
        validate_results(data)
    except CodError as exc:
        raise CodError(f"{path}: {exc}") from None
    return data
