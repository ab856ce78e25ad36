"""Our weights format: safetensors with the model config embedded in the metadata."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cod.errors import CheckpointError
from cod.image_io import default_file_mode

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


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    check_state_dict(model, state)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def save_weights(path: str | Path, state: Mapping[str, torch.Tensor], config: Mapping[str, Any], dtype: torch.dtype | None = None) -> None:
    """Write a .safetensors file (atomically) holding ``state`` and ``config``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach()).cpu().contiguous() for k, v in state.items()}
    meta = {"format": FORMAT_TAG, "cod_config": json.dumps(dict(config), sort_keys=True)}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) of one of our .safetensors weight files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable .safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if "cod_config" not in meta:
        raise CheckpointError(f"{path}: no cod config inside; make the file with `cod convert` or `cod train`")
    try:
        config = json.loads(meta["cod_config"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt cod config metadata") from None
    return config, state
