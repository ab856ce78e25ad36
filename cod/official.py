"""Official checkpoints (.pt + .yaml) -> our config and state dict (strict).

The official release stores CoD-Lite models as ``net.``-prefixed keys in the un-folded
training form (CoD-Lite spec §3). Our module names differ only at the top level; the
table below is the whole mapping, used in both directions. CoD models: second half.

Each family's converter is an :class:`OfficialFormat` (the yaml it recognises, the
conversion, the official name of one of our keys), registered with the family in
cod.families.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from cod.errors import CheckpointError
from cod.zoo import CODLITE_FULL, COD_FAMILIES, COD_RATES, cod_config, rate_label

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


OFFICIAL_SUFFIXES = (".pt", ".pth", ".ckpt")


def is_official_checkpoint(path: str | Path) -> bool:
    """An official-release checkpoint (torch pickle), as opposed to our .safetensors."""
    return Path(path).suffix in OFFICIAL_SUFFIXES


def official_yaml_for(ckpt: str | Path, config_yaml: str | Path | None = None, must_exist: bool = True) -> Path:
    """The .yaml of an official checkpoint: the one given, else the one beside it."""
    ckpt = Path(ckpt)
    path = Path(config_yaml) if config_yaml else ckpt.with_suffix(".yaml")
    if must_exist and not path.is_file():
        raise CheckpointError(f"official checkpoint {ckpt.name} needs its .yaml config (looked for {path}; give --config)")
    return path


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


def read_yaml(path: str | Path) -> dict[str, Any]:
    """An official yaml config as a dict (an empty one when the file is not a mapping)."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"config not found: {path}") from None
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable yaml file ({type(exc).__name__})") from None
    return doc if isinstance(doc, dict) else {}


def _model_section(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    model = doc.get("model")
    return model if isinstance(model, Mapping) else {}


def read_official_yaml(path: str | Path) -> dict[str, Any]:
    """model.net.init_args of an official CoD-Lite yaml config."""
    try:
        args = _model_section(read_yaml(path))["net"]["init_args"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: not an official config (no model.net.init_args)") from None
    return dict(args or {})


def convert_official(ckpt: str | Path, config_yaml: str | Path, prefix: str | None = None, unsafe_pickle: bool = False, name: str | None = None):
    """(config, our state dict, ignored prefixes) from an official checkpoint + yaml."""
    cfg = config_from_official_args(read_official_yaml(config_yaml), name)
    picked, ignored = select_prefix(read_official_checkpoint(ckpt, unsafe_pickle), prefix)
    return cfg, official_to_ours(picked), ignored


# ========================================================================================
# CoD (the parent diffusion model; CoD spec §7). Checkpoints hold the EMA weights under
# ``ema_denoiser.`` (plus ``denoiser.`` online weights and ``diffusion_trainer.`` heads,
# both ignored). Official module names -> ours: the top-level table below, and the single
# official ``blocks`` list split in two at ``num_cond_blocks``:
#   pixel:  blocks.{i < n} -> encoder_blocks.{i},  blocks.{n + j} -> pixel_blocks.{j}
#   latent: blocks.{i < n} -> encoder_blocks.{i},  blocks.{n + j} -> decoder_blocks.{j}
# Names inside a block are the official ones.
COD_CHECKPOINT_PREFIX = "ema_denoiser."

_COD_COMMON_RENAMES: list[tuple[str, str]] = [
    ("y_embedder.encoder.", "condition.encoder."),
    ("y_embedder.bottleneck.embedding.", "condition.quantizer.codebook."),
    ("y_embedder.decoder.", "condition.decoder."),
    ("t_embedder.", "time_embedder."),
    ("s_embedder.proj.", "encoder_embedder."),
    ("final_layer.", "final_layer."),
]
COD_PIXEL_RENAMES: list[tuple[str, str]] = _COD_COMMON_RENAMES + [
    ("y_embedder_x.", "pixel_condition_proj."),
    ("x_embedder.embedder.", "pixel_embedder.embedder."),
]
COD_LATENT_RENAMES: list[tuple[str, str]] = _COD_COMMON_RENAMES + [
    ("x_embedder.proj.", "decoder_embedder."),
]
_COD_TABLES = {"cod-pixel": (COD_PIXEL_RENAMES, "pixel_blocks"), "cod-latent": (COD_LATENT_RENAMES, "decoder_blocks")}

# Official class defaults (PixNerDiT / DDT constructors), for yaml files that omit an argument.
COD_ARG_DEFAULTS: dict[str, dict[str, Any]] = {
    "cod-pixel": {"in_channels": 4, "num_groups": 12, "hidden_size": 1152, "hidden_size_x": 64, "nerf_mlpratio": 4, "num_blocks": 18, "num_cond_blocks": 4, "patch_size": 2, "ds": 32, "codebook_bits": 4, "up2x": False, "light": False},
    "cod-latent": {"in_channels": 4, "num_groups": 12, "hidden_size": 1152, "num_blocks": 18, "num_cond_blocks": 4, "patch_size": 2, "ds": 32, "codebook_bits": 4, "up2x": False, "light": False},
}
COD_CLASSES = {"PixNerDiT": "cod-pixel", "DDT": "cod-latent"}


def _cod_table(family: str) -> tuple[list[tuple[str, str]], str]:
    if family not in _COD_TABLES:
        raise CheckpointError(f"not a CoD family: {family!r} (cod-pixel or cod-latent)")
    return _COD_TABLES[family]


def cod_official_to_ours(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Rename bare official CoD keys (prefix already stripped) to ours; an unknown key is an
    error naming it. ``config`` gives the family and num_cond_blocks."""
    table, head = _cod_table(config["family"])
    n = int(config["num_cond_blocks"])
    out = {}
    for k, v in state.items():
        m = re.match(r"blocks\.(\d+)\.(.+)$", k)
        if m:
            i = int(m.group(1))
            new = f"encoder_blocks.{i}.{m.group(2)}" if i < n else f"{head}.{i - n}.{m.group(2)}"
        else:
            new = _rename(k, table)
        if new is None:
            raise CheckpointError(f"unexpected key in official {config['family']} checkpoint: {k!r}")
        out[new] = v
    return out


def cod_ours_to_official(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of cod_official_to_ours (bare official keys, no prefix)."""
    table, head = _cod_table(config["family"])
    n = int(config["num_cond_blocks"])
    out = {}
    for k, v in state.items():
        m = re.match(rf"(encoder_blocks|{head})\.(\d+)\.(.+)$", k)
        if m:
            i = int(m.group(2)) + (0 if m.group(1) == "encoder_blocks" else n)
            new = f"blocks.{i}.{m.group(3)}"
        else:
            new = _rename(k, table, reverse=True)
        if new is None:
            raise CheckpointError(f"key {k!r} has no official name")
        out[new] = v
    return out


def cod_config_from_official_args(family: str, init_args: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """Our CoD config (cod.zoo layout) from the official constructor arguments."""
    if family not in COD_FAMILIES:
        raise CheckpointError(f"not a CoD family: {family!r}")
    args = dict(COD_ARG_DEFAULTS[family])
    args.update(init_args)
    ds, bits = int(args["ds"]), int(args["codebook_bits"])
    rate = next((r for r, v in COD_RATES.items() if v == (ds, bits)), None)
    cfg = cod_config(family, rate or "0.0039")  # an unknown rate keeps the 0.0039 decode defaults
    keys = ["in_channels", "patch_size", "hidden_size", "num_groups", "num_blocks", "num_cond_blocks"]
    if family == "cod-pixel":
        keys += ["hidden_size_x", "nerf_mlpratio"]
    cfg.update({k: int(args[k]) for k in keys})
    cfg.update(ds=ds, codebook_bits=bits, rate=rate or rate_label(ds, bits), up2x=bool(args["up2x"]), light=bool(args["light"]))
    cfg["name"] = name or f"{family}-{cfg['rate']}{'' if cfg['up2x'] else '-256'}"
    return cfg


def read_official_cod_yaml(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(family, model.denoiser.init_args) of an official CoD yaml (training or HF config)."""
    doc = read_yaml(path)
    cls = _cod_class(doc)
    if cls is None:
        raise CheckpointError(f"{path}: not an official CoD config (no model.denoiser.class_path)")
    args = dict(_model_section(doc)["denoiser"].get("init_args") or {})
    if cls not in COD_CLASSES:
        raise CheckpointError(f"{path}: unknown CoD denoiser class {cls!r} (expected {' or '.join(COD_CLASSES)})")
    family = COD_CLASSES[cls]
    latent = _model_section(doc).get("latent")
    if latent is not None and bool(latent) != (family == "cod-latent"):
        raise CheckpointError(f"{path}: model.latent={latent} contradicts the denoiser class {cls}")
    return family, args


def _cod_class(doc: Mapping[str, Any]) -> str | None:
    """The class name of an official CoD yaml's denoiser (``PixNerDiT``, ``DDT``), else None."""
    den = _model_section(doc).get("denoiser")
    if not isinstance(den, Mapping) or "class_path" not in den:
        return None
    return str(den["class_path"]).rsplit(".", 1)[-1]


def convert_official_cod(ckpt: str | Path, config_yaml: str | Path, prefix: str | None = COD_CHECKPOINT_PREFIX, unsafe_pickle: bool = False, name: str | None = None):
    """(config, our state dict, ignored prefixes) from an official CoD checkpoint + yaml.
    The EMA weights (``ema_denoiser.``) are taken by default, as the official inference does."""
    family, args = read_official_cod_yaml(config_yaml)
    cfg = cod_config_from_official_args(family, args, name)
    picked, ignored = select_prefix(read_official_checkpoint(ckpt, unsafe_pickle), prefix)
    return cfg, cod_official_to_ours(picked, cfg), ignored


# ========================================================================================
# The converters as the registry (cod.families) sees them.
@dataclass(frozen=True)
class OfficialFormat:
    """How one family's official checkpoints are recognised and converted."""

    describe: str  # what its yaml holds, for error messages
    claims: Callable[[Mapping[str, Any]], bool]  # does this official yaml describe a model of the family
    convert: Callable[..., tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]]  # (ckpt, yaml, prefix=, unsafe_pickle=, name=)
    official_key: Callable[[str, Mapping[str, Any]], str] | None = None  # our key -> the checkpoint's, for error messages


def _cod_official_key(key: str, config: Mapping[str, Any]) -> str:
    return COD_CHECKPOINT_PREFIX + next(iter(cod_ours_to_official({key: None}, config)))


CODLITE_OFFICIAL = OfficialFormat(
    "model.net.init_args",
    lambda doc: "net" in _model_section(doc) and "denoiser" not in _model_section(doc),
    convert_official,
)


def _cod_format(cls: str) -> OfficialFormat:
    return OfficialFormat(f"model.denoiser of class {cls}", lambda doc: _cod_class(doc) == cls, convert_official_cod, _cod_official_key)


COD_PIXEL_OFFICIAL, COD_LATENT_OFFICIAL = _cod_format("PixNerDiT"), _cod_format("DDT")
