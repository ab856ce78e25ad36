"""Our weights format: safetensors with the model config embedded in the metadata (docs/format.md).

The config (and so the family) is read from the metadata alone, without the tensors
(:func:`read_config`); :func:`read_weights` reads both.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cod.errors import CheckpointError
from cod.image_io import atomic_output

FORMAT_TAG = "cod-weights-1"


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise a one-line CheckpointError naming the first missing/unexpected key or shape mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"missing key in weights: {missing[0]!r}{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"unexpected key in weights: {unexpected[0]!r}{more}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"shape mismatch for {k!r}: weights {tuple(v.shape)}, model {tuple(own[k].shape)}")


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], assign: bool = False) -> None:
    """Check ``state`` against the model (:func:`check_state_dict`), then load it in the model's
    dtypes. ``assign=True`` takes the tensors themselves (a model built on the meta device)."""
    check_state_dict(model, state)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype).contiguous() if assign else v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=assign)


def save_weights(path: str | Path, state: Mapping[str, torch.Tensor], config: Mapping[str, Any], dtype: torch.dtype | None = None) -> None:
    """Write a .safetensors file (atomically) holding ``state`` and ``config``."""
    from safetensors.torch import save_file

    tensors = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach()).cpu().contiguous() for k, v in state.items()}
    meta = {"format": FORMAT_TAG, "cod_config": json.dumps(dict(config), sort_keys=True)}
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def _open(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable .safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def _config_of(path: Path, meta: Mapping[str, str] | None) -> dict[str, Any]:
    meta = meta or {}
    if "cod_config" not in meta:
        raise CheckpointError(f"{path}: no cod config inside; make the file with `cod convert` or `cod train`")
    try:
        config = json.loads(meta["cod_config"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt cod config metadata") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: corrupt cod config metadata (not an object)")
    return config


def read_config(path: str | Path) -> dict[str, Any]:
    """The config of one of our .safetensors weight files, from its metadata only (no tensor is read)."""
    path = Path(path)
    with _open(path) as f:
        return _config_of(path, f.metadata())


def read_tensor(path: str | Path, key: str) -> torch.Tensor:
    """One tensor of a .safetensors weight file (the others are not read)."""
    path = Path(path)
    with _open(path) as f:
        if key not in f.keys():
            raise CheckpointError(f"{path}: no tensor {key!r}")
        return f.get_tensor(key)


def read_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) of one of our .safetensors weight files."""
    path = Path(path)
    with _open(path) as f:
        config = _config_of(path, f.metadata())
        try:
            state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable .safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return config, state
