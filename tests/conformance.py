"""Helpers to run the official conformance vectors (../shared/conformance) against our models."""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rule_tensor(key: str, shape) -> np.ndarray:
    """float32 value of official state-dict entry ``key`` under conformance weight rule v1."""
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    v = np.asarray(rng.standard_normal(shape), dtype=np.float64)
    if len(shape) >= 2:
        v = v * (1.0 / math.sqrt(math.prod(shape[1:])))
    elif len(shape) == 1:
        v = 1.0 + 0.1 * v if key.endswith(".weight") else 0.1 * v
    else:
        v = np.zeros(shape, dtype=np.float64)
    return v.astype(np.float32)


def load_manifest(case_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(case_dir) / "manifest.json").read_text())


def official_state_dict(manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The official-layout state dict of a case, regenerated from the weight rule."""
    return {e["key"]: torch.from_numpy(rule_tensor(e["key"], e["shape"])) for e in manifest["state_dict"]}
