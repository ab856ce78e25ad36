"""Official checkpoints (.pt + .yaml) -> our config and state dict (strict).

The official release stores CoD-Lite models as ``net.``-prefixed keys in the un-folded
training form (CoD-Lite spec §3). Our module names differ only at the top level; the
table below is the whole mapping, used in both directions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from cod.errors import CheckpointError

# official prefix -> our prefix (CoD-Lite).  Longest official prefix wins.
CODLITE_RENAMES: list[tuple[str, str]] = [
    ("y_embedder.encoder.", "condition.encoder."),
    ("y_embedder.bottleneck.embedding.", "condition.quantizer.codebook."),
    ("y_embedder.decoder.", "condition.decoder."),
    ("y_embedder_x.", "pixel_condition_proj."),
    ("t_embedder.", "time_embedder."),
    ("x_embedder.embedder.", "pixel_embedder.embedder."),
    ("s_embedder.", "patch_embedder."),
    ("blocks.", "blocks."),
    ("dec_net.", "pixel_head."),
    ("final_layer.", "final_layer."),
]

# Official constructor arguments (yaml model.net.init_args) -> ours.  Missing ones take
# the official class defaults.
CODLITE_ARG_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "patch_size": 16,
    "hidden_size": 384,
    "hidden_size_x": 32,
    "num_blocks": 24,
    "num_cond_blocks": 21,
    "mlp_ratio": 4.0,
    "light": True,
    "up2x": True,
    "ds": 32,
    "codebook_bits": 4,
    "noise_level": 0.0,  # FinetunedOneStepCoD default
}


def _rename(key: str, table: list[tuple[str, str]], reverse: bool = False) -> str | None:
    pairs = [(b, a) for a, b in table] if reverse else table
    best = None
    for src, dst in pairs:
        if key.startswith(src) and (best is None or len(src) > len(best[0])):
            best = (src, dst)
    if best is None:
        return None
    return best[1] + key[len(best[0]) :]


def official_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename bare official CoD-Lite keys to ours; an unknown key is an error naming it."""
    out = {}
    for k, v in state.items():
        if ".block." in k and k.startswith("blocks."):
            raise CheckpointError(
                f"key {k!r} is from the folded eval form (saved after .eval()), which drops the time "
                "modulation; convert the training-form checkpoint instead"
            )
        new = _rename(k, CODLITE_RENAMES)
        if new is None:
            raise CheckpointError(f"unexpected key in official checkpoint: {k!r}")
        out[new] = v
    return out


def ours_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of official_to_ours (train form only)."""
    out = {}
    for k, v in state.items():
        new = _rename(k, CODLITE_RENAMES, reverse=True)
        if new is None:
            raise CheckpointError(f"key {k!r} has no official name")
        out[new] = v
    return out


def config_from_official_args(init_args: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """Our CoD-Lite config from the official constructor arguments."""
    args = dict(CODLITE_ARG_DEFAULTS)
    args.update({k: v for k, v in init_args.items()})
    if args.get("pred", "x") != "x":
        raise CheckpointError(f"CoD-Lite one-step models predict x; config says pred={args['pred']!r}")
    from cod.zoo import CODLITE_FULL, rate_label

    cfg = dict(CODLITE_FULL)
    for key in ("in_channels", "patch_size", "hidden_size", "hidden_size_x", "num_blocks", "num_cond_blocks", "mlp_ratio", "light", "up2x", "ds", "codebook_bits", "noise_level"):
        cfg[key] = args[key]
    cfg["ds"], cfg["codebook_bits"] = int(cfg["ds"]), int(cfg["codebook_bits"])
    cfg["name"] = name or f"codlite-{rate_label(cfg['ds'], cfg['codebook_bits'])}"
    return cfg


def select_prefix(state: Mapping[str, Any], prefix: str | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Pick the network's tensors out of a checkpoint dict.

    ``prefix=None`` tries ``net.``, then ``ema_denoiser.``, then bare keys. Returns the
    stripped dict and the names of the ignored top-level prefixes (training leftovers).
    """
    for wrapper in ("module", "state_dict"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    candidates = [prefix] if prefix is not None else ["net.", "ema_denoiser.", ""]
    for pre in candidates:
        picked = {k[len(pre) :]: v for k, v in tensors.items() if k.startswith(pre)}
        if pre == "":
            picked = {k: v for k, v in picked.items() if k.split(".")[0] in {a.split(".")[0] for a, _ in CODLITE_RENAMES}}
        if picked:
            ignored = sorted({k.split(".")[0] + "." for k in tensors if not k.startswith(pre) or k[len(pre):] not in picked})
            return picked, ignored
    raise CheckpointError(f"no network weights found in checkpoint (looked for prefix {', '.join(repr(c) for c in candidates)})")


def read_official_checkpoint(path: str | Path, unsafe_pickle: bool = False) -> dict[str, Any]:
    """torch.load an official .pt, refusing arbitrary pickles unless asked."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds
        hint = "" if unsafe_pickle else " (if you trust the file, retry with --unsafe-pickle)"
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}{hint}") from None


def read_official_yaml(path: str | Path) -> dict[str, Any]:
    """model.net.init_args of an official yaml config."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
        args = doc["model"]["net"]["init_args"]
    except FileNotFoundError:
        raise CheckpointError(f"config not found: {path}") from None
    except Exception:  # noqa: BLE001
        raise CheckpointError(f"{path}: not an official config (no model.net.init_args)") from None
    return dict(args or {})


def convert_official(ckpt: str | Path, config_yaml: str | Path, prefix: str | None = None, unsafe_pickle: bool = False, name: str | None = None):
    """(config, our state dict, ignored prefixes) from an official checkpoint + yaml."""
    cfg = config_from_official_args(read_official_yaml(config_yaml), name)
    picked, ignored = select_prefix(read_official_checkpoint(ckpt, unsafe_pickle), prefix)
    return cfg, official_to_ours(picked), ignored
