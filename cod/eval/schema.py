"""JSON Schema of the results files written by ``cod bench`` (CompressAI layout plus extras).

The same schema is printed in docs/evaluation.md; :func:`validate_results` checks a dict
against it (jsonschema) and that every list in ``results`` has one value per point.
"""
from __future__ import annotations

from typing import Any, Mapping

from cod.errors import CodError

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
