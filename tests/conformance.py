"""Helpers to run the official conformance vectors (../shared/conformance, or the subset in
tests/data/conformance: tests.conftest.conformance_case) against our models."""
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


def write_official_codlite(case_dir: str | Path, ckpt: str | Path, config: str | Path) -> dict[str, Any]:
    """Write a CoD-Lite case as an official release ships it: a .pt (``net.``-prefixed, with a
    training leftover) and a .yaml holding model.net.init_args. Returns the manifest."""
    import yaml

    man = load_manifest(case_dir)
    sd = {f"net.{k}": v for k, v in official_state_dict(man).items()}
    sd["codec_trainer.net_loss.proj.0.weight"] = torch.zeros(2, 2)  # ignored leftover
    torch.save({"state_dict": sd}, ckpt)
    Path(config).write_text(yaml.safe_dump({"model": {"net": {"class_path": man["deployed_class"], "init_args": man["constructor_args"]}}}))
    return man


def write_official_cod(case_dir: str | Path, ckpt: str | Path, config: str | Path) -> dict[str, Any]:
    """Write a CoD case as an official release ships it: a Lightning-style .pt (EMA weights
    under ``ema_denoiser.``, plus online and trainer leftovers) and a yaml with model.denoiser.
    Returns the manifest."""
    import yaml

    man = load_manifest(case_dir)
    sd = official_state_dict(man)
    ckpt_sd = {f"ema_denoiser.{k}": v for k, v in sd.items()}
    first = next(iter(sd))
    ckpt_sd[f"denoiser.{first}"] = torch.zeros_like(sd[first])  # online weights: ignored
    ckpt_sd["diffusion_trainer.proj.0.0.weight"] = torch.zeros(2, 2)  # training head: ignored
    torch.save({"state_dict": ckpt_sd}, ckpt)
    latent = man["model_class"].endswith("DDT")
    doc = {"model": {"latent": latent, "denoiser": {"class_path": man["model_class"], "init_args": man["constructor_args"]}}}
    Path(config).write_text(yaml.safe_dump(doc))
    return man
