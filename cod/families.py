"""The family registry and the one loader.

A family is one kind of model with its own network, config and codec: CoD-Lite (one-step
convolutional decoder), CoD pixel (PixNerDiT) and CoD latent (DDT). Each registers here, in
one place (:data:`FAMILIES`): its typed config (a dataclass next to its network), its network
builder, its codec class and its official converter. Everything that loads, builds, converts
or lists models goes through the registry: :func:`load` (``cod.load``), ``cod convert``,
``cod models``, ``cod decompress``'s pick of the installed model (:func:`installed_codec_for`)
and the trainers (:func:`build_network`, :func:`load_network`).

    codec = cod.load()                                   # the installed default model
    codec = cod.load("codlite-0.0312", weights="codlite-0.0312.safetensors")
    codec = cod.load(weights="CoD_pixel_vpred.pt")       # an official .pt, its .yaml beside it
    model, config = load_network("cod-pixel-0.0039")     # the bare network (training, tools)

A new family (docs/architecture.md) brings its own files (network + config, codec class,
converter) and its rows of the tables in cod.zoo (named models, bitstream code), and one
:func:`register` call below.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from cod import bitstream as bs
from cod.checkpoint import load_state_strict, read_config, read_tensor, read_weights
from cod.cod_codec import CoDCodec
from cod.codec import CoDLiteCodec, IndexCodec, resolve_device
from cod.config import ModelConfig
from cod.entropy import IndexPrior, split_prior
from cod.errors import CheckpointError, CodError, ConfigError, ModelMismatchError, UsageError
from cod.limits import DEFAULT_MAX_MEMORY, DEFAULT_MAX_PIXELS, DEFAULT_MAX_STEPS
from cod.models.latent_dit import CoDLatentConfig, build_latent_dit
from cod.models.lite import CoDLiteConfig, build_codlite
from cod.models.pixel_dit import CoDPixelConfig, build_pixel_dit
from cod.official import CODLITE_OFFICIAL, COD_LATENT_OFFICIAL, COD_PIXEL_OFFICIAL, OfficialFormat, is_official_checkpoint, official_yaml_for, read_yaml
from cod.zoo import DEFAULT_MODEL, FAMILY_CODES, MODELS, RETIRED_MODELS, get_config

WEIGHTS_DIR = Path(__file__).parent / "weights"


# ------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Family:
    """Everything the package needs to know about one family of models."""

    name: str  # the config's ``family`` (a key of cod.zoo.FAMILY_CODES)
    title: str  # for messages
    config_type: type[ModelConfig]  # the typed config; weights files store its dict form
    build: Callable[[Any], nn.Module]  # typed config (or dict) -> network with fresh weights
    codec: type[IndexCodec]  # built as codec(network, config dict, device, pad_mode=..., **options)
    official: OfficialFormat | None = None  # the official checkpoints' converter, if any
    build_on_meta: bool = False  # large networks: build on the meta device, then take the weights

    @property
    def code(self) -> int:
        """The .cod header's family field."""
        return FAMILY_CODES[self.name]

    def config(self, data: Mapping[str, Any] | ModelConfig, where: str = "config") -> ModelConfig:
        """The typed config; an unknown or missing key is a ConfigError naming it."""
        return self.config_type.coerce(data, where)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family to the registry (its bitstream code must be in cod.zoo.FAMILY_CODES)."""
    if family.name not in FAMILY_CODES:
        raise ValueError(f"family {family.name!r} has no bitstream code in cod.zoo.FAMILY_CODES")
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


register(Family("codlite", "CoD-Lite", CoDLiteConfig, build_codlite, CoDLiteCodec, CODLITE_OFFICIAL))
register(Family("cod-pixel", "CoD pixel", CoDPixelConfig, build_pixel_dit, CoDCodec, COD_PIXEL_OFFICIAL, build_on_meta=True))
register(Family("cod-latent", "CoD latent", CoDLatentConfig, build_latent_dit, CoDCodec, COD_LATENT_OFFICIAL, build_on_meta=True))

COD = ("cod-pixel", "cod-latent")  # the CoD foundation models (cod.load_cod)


# ------------------------------------------------------------------ lookups
def _names(family: str | Sequence[str] | None) -> tuple[str, ...] | None:
    return (family,) if isinstance(family, str) else (tuple(family) if family is not None else None)


def _titles(names: Sequence[str]) -> str:
    return " or ".join(FAMILIES[n].title if n in FAMILIES else n for n in names)


def family_of(config: Mapping[str, Any] | ModelConfig, where: str = "config", family: str | Sequence[str] | None = None) -> Family:
    """The registered family of a config (its ``family`` key); ``family`` names the ones
    allowed here (an error names what was found)."""
    name = config.family if isinstance(config, ModelConfig) else config.get("family")
    if name is None:
        raise ConfigError(f"{where}: missing key 'family'")
    if name not in FAMILIES:
        raise ConfigError(f"{where}: unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    allowed = _names(family)
    if allowed is not None and name not in allowed:
        raise CheckpointError(f"{where}: a {FAMILIES[name].title} model, not {_titles(allowed)}")
    return FAMILIES[name]


def family_of_code(code: int) -> Family | None:
    """The family of a .cod header's family field (None for a code this version does not know)."""
    return next((f for f in FAMILIES.values() if f.code == code), None)


def check_config(config: Mapping[str, Any] | ModelConfig, where: str = "config", family: str | Sequence[str] | None = None) -> ModelConfig:
    """The typed config of a config dict, through its family (strict: see cod.config)."""
    return family_of(config, where, family).config(config, where)


def build_network(config: Mapping[str, Any] | ModelConfig, family: str | Sequence[str] | None = None, meta: bool = False, where: str = "config") -> nn.Module:
    """A network with fresh weights from a config; ``meta=True`` builds it on the meta device
    (shapes only). ``family`` restricts the families accepted."""
    fam = family_of(config, where, family)
    typed = fam.config(config, where)
    if meta:
        with torch.device("meta"):
            return fam.build(typed)
    return fam.build(typed)


def known_models() -> list[str]:
    """Every model name `cod` knows: the named models of every family (cod.zoo.MODELS), then
    installed weights under other names."""
    return [*MODELS, *sorted(set(installed_weights()) - set(MODELS))]


def unknown_model(name: str) -> UsageError:
    """The one error for a model name nobody knows: ``unknown model X; known: ...``."""
    return UsageError(f"unknown model {name}; known: {', '.join(known_models())}")


def model_config(name: str) -> dict[str, Any]:
    """The config dict of a named model (cod.zoo.MODELS, any family); UsageError if unknown."""
    if name not in MODELS:
        raise unknown_model(name)
    return get_config(name)


def official_family(config_yaml: str | Path) -> Family:
    """The family whose official yaml this is (each family's converter recognises its own)."""
    doc = read_yaml(config_yaml)
    for fam in FAMILIES.values():
        if fam.official is not None and fam.official.claims(doc):
            return fam
    known = "; ".join(f"{f.title}: {f.official.describe}" for f in FAMILIES.values() if f.official is not None)
    raise CheckpointError(f"{config_yaml}: not an official config of a known family ({known})")


# ------------------------------------------------------------------ weights
def installed_weights() -> dict[str, Path]:
    """Default weights shipped inside the package: model name -> file."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def _installed_for(name: str | None, family: tuple[str, ...] | None) -> tuple[str, Path]:
    inst = installed_weights()
    if family is not None:
        inst = {n: p for n, p in inst.items() if read_config(p).get("family") in family}
    if name is None:
        if not inst:
            what = f"{_titles(family)} " if family is not None else ""
            raise CheckpointError(f"no {what}weights installed; pass --weights PATH (see `cod models`)")
        name = DEFAULT_MODEL if DEFAULT_MODEL in inst else sorted(inst)[0]
    if name not in inst:
        if name not in MODELS and name not in installed_weights():
            raise unknown_model(name)
        known = f" Installed: {', '.join(inst)}." if inst else ""
        raise CheckpointError(
            f"no weights installed for {name}; pass --weights PATH (a .safetensors from `cod convert`, "
            f"or an official .pt with its .yaml next to it).{known}"
        )
    return name, inst[name]


def _with_weights(fam: Family, typed: ModelConfig, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], official: bool) -> nn.Module:
    """The family's network holding ``state``, strictly (a missing, unexpected or mis-shaped key
    is a CheckpointError naming it, and its official name for an official checkpoint)."""
    if fam.build_on_meta:  # no multi-GB random init: the weights are assigned
        with torch.device("meta"):
            model = fam.build(typed)
    else:
        model = fam.build(typed)
    try:
        load_state_strict(model, state, assign=fam.build_on_meta)
    except CheckpointError as exc:
        if not (official and fam.official is not None and fam.official.official_key is not None):
            raise
        m = re.search(r"'([^']+)'", str(exc))
        try:
            off = fam.official.official_key(m.group(1), config) if m else None
        except CheckpointError:
            off = None
        raise CheckpointError(f"{exc} (official name: '{off}')" if off else str(exc)) from None
    return model


def load_network(
    name: str | None = None,
    weights: str | Path | None = None,
    config_yaml: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    unsafe_pickle: bool = False,
    family: str | Sequence[str] | None = None,
    with_prior: bool = False,
) -> tuple[nn.Module, dict[str, Any]] | tuple[nn.Module, dict[str, Any], IndexPrior | None]:
    """(network, config dict) of a model, its weights loaded strictly; with ``with_prior``,
    also the index prior stored in our weights file (cod.entropy), or None.

    ``weights``: our .safetensors, an official .pt (+ its .yaml, beside it or ``config_yaml``;
    ``unsafe_pickle`` allows pickled objects in it), or None for the installed weights of
    ``name`` (default: the installed default model). ``random_init=True`` gives the named
    model with random weights (seeded). ``name`` must agree with the weights' family, ds,
    codebook bits and up2x; ``family`` restricts the families accepted."""
    allowed = _names(family)
    if random_init:
        if name is None:
            raise CheckpointError("a model name is needed for random weights")
        config = model_config(name)
        fam = family_of(config, name, allowed)
        torch.manual_seed(seed)
        model = fam.build(fam.config(config, name))
        return (model, config, None) if with_prior else (model, config)
    if weights is None:
        name, weights = _installed_for(name, allowed)
    weights = Path(weights)
    official = is_official_checkpoint(weights)
    if official:
        yaml_path = official_yaml_for(weights, config_yaml)
        converter = official_family(yaml_path).official
        config, state, _ = converter.convert(weights, yaml_path, unsafe_pickle=unsafe_pickle, name=name)
        prior = None
    else:
        config, state = read_weights(weights)
        prior = IndexPrior.from_tensors(int(config.get("codebook_bits", 0)), split_prior(state))
    fam = family_of(config, str(weights), allowed)
    typed = fam.config(config, str(weights))
    if name is not None and name in MODELS:
        keys = ("family", "ds", "codebook_bits", "up2x")
        if any(MODELS[name][k] != config.get(k) for k in keys):
            got = ", ".join(f"{k}={config.get(k)}" for k in keys)
            raise CheckpointError(f"{weights} holds a model with {got}, not {name}")
    config.setdefault("name", name or weights.stem)
    model = _with_weights(fam, typed, config, state, official)
    return (model, config, prior) if with_prior else (model, config)


def load(
    name: str | None = None,
    weights: str | Path | None = None,
    device: str | torch.device | None = "cpu",
    config_yaml: str | Path | None = None,
    pad_mode: str = "replicate",
    random_init: bool = False,
    seed: int = 0,
    vae: Any = None,
    progress: bool = False,
    unsafe_pickle: bool = False,
    family: str | Sequence[str] | None = None,
    entropy: bool = True,
    chroma: bool | int = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    precision: str | None = None,
    memory_budget: int | None = None,
) -> IndexCodec:
    """Load a codec of any family (``cod.load``): the family comes from the name or the
    weights (see :func:`load_network` for ``name``, ``weights``, ``random_init``, ``family``).
    ``device``: cpu, cuda or auto. Options the family's codec takes: ``vae`` (latent CoD: the
    SD-VAE folder, loaded on first decode) and ``progress`` (a bar over the sampling steps).
    ``entropy``: write .cod v2 (range-coded indices) when the weights carry an index prior;
    False writes v1. Files of either version decode either way. ``chroma``: CoD-Lite models
    whose config has a ``chroma_block`` (the shipped small ones) write the original's coarse
    colour beside the indices (.cod v4, cod.chroma); False leaves it out; an int N stores it
    in N-pixel blocks whatever the config says (CoD-Lite). ``max_pixels``, ``max_memory``
    (bytes) and, for CoD models, ``max_steps`` are the decoding limits (cod.limits; None: no
    limit), checked from a file's header before anything is allocated; CoD-Lite sizes its
    tiles from ``max_memory``. ``precision`` (fast, bf16, fp32: cod.inference) and
    ``memory_budget`` (bytes of activations before images are tiled, cod.lite_pipeline;
    default: from ``max_memory``) apply to CoD-Lite; None keeps the codec's default, and
    CoD models accept only fp32."""
    dev = resolve_device(device)
    model, config, prior = load_network(name, weights, config_yaml, random_init, seed, unsafe_pickle, family, with_prior=True)
    codec_cls = FAMILIES[config["family"]].codec
    takes = {f.name for f in dataclasses.fields(codec_cls)}
    if precision not in (None, "fp32") and "precision" not in takes:
        raise CodError(f"--precision {precision}: {config.get('name', config['family'])} runs in fp32 only (the fast path is CoD-Lite's)")
    options = {"vae": vae, "progress": progress, "prior": prior, "entropy": entropy, "chroma": chroma, "max_pixels": max_pixels, "max_memory": max_memory, "max_steps": max_steps, "precision": precision, "memory_budget": memory_budget}
    options = {k: v for k, v in options.items() if k in takes and not (k in ("precision", "memory_budget") and v is None)}
    return codec_cls(model, config, dev, pad_mode=pad_mode, **options)


def load_cod(*args: Any, **kwargs: Any) -> IndexCodec:
    """:func:`load` restricted to the CoD foundation models (cod-pixel, cod-latent)."""
    return load(*args, family=COD, **kwargs)


def installed_codec_for(data: bytes, device: str | torch.device | None = "cpu", cache: dict[Any, Any] | None = None, **options: Any) -> IndexCodec:
    """The installed codec that wrote a .cod file (same family, ds, bits and model tag), so
    that ``cod decompress FILE`` needs no flags. Candidates are told apart by their weights'
    metadata and codebook alone; only the match is loaded (with ``options``, keywords of
    :func:`load`: limits, precision, ...). ``cache`` keeps what was read and loaded between files."""
    header = bs.read_cod(data).header
    want = (header.family, header.ds, header.bits, header.model_tag)
    cache = {} if cache is None else cache
    for name, path in installed_weights().items():
        if ("id", name) not in cache:
            config = read_config(path)
            fam = FAMILIES.get(config.get("family"))
            if fam is None:
                continue
            typed = fam.config(config, str(path))
            tag = bs.model_tag_of(read_tensor(path, fam.codec.CODEBOOK_KEY).float().numpy())
            cache[("id", name)] = (fam.code, typed.index_stride, typed.codebook_bits, tag)
        if cache[("id", name)] == want:
            if name not in cache:
                cache[name] = load(name, device=device, **options)
            return cache[name]
    retired = RETIRED_MODELS.get((header.ds, header.bits, header.model_tag)) if header.family == FAMILY_CODES["codlite"] else None
    if retired:
        raise ModelMismatchError(f"this file was written by the retired model {retired}; decode it with --weights old.safetensors")
    raise ModelMismatchError(
        f"no installed model wrote this file ({header.family_name}, ds={header.ds}, {header.bits}-bit codebook, model tag {header.model_tag:04x}); "
        "pass --weights PATH (installed: " + (", ".join(installed_weights()) or "none") + ")"
    )


__all__ = [
    "Family", "FAMILIES", "register", "family_of", "family_of_code", "check_config", "build_network", "model_config", "known_models", "official_family",
    "installed_weights", "load_network", "load", "load_cod", "installed_codec_for", "WEIGHTS_DIR", "COD",
]
