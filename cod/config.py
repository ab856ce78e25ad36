"""Typed model configs: frozen dataclasses read from and written to plain dicts, strictly.

A weights file stores its model's config as JSON in the safetensors metadata (docs/format.md);
the named models are plain dicts in :mod:`cod.zoo`. Each family declares a dataclass of its
fields next to its network (diffusers style); :func:`from_dict` turns a dict into it and refuses
an unknown key, a missing key or a value of the wrong type with a one-line error naming the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

from cod.errors import ConfigError
from cod.zoo import index_stride

T = TypeVar("T")


def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(where: str, key: str, value: Any, kind: Any) -> Any:
    """``value`` checked against the annotation ``kind`` (int, float, bool, str, Optional, a
    nested dataclass); ints are accepted where a float is expected."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key!r} must be a mapping, got {value!r}")
        return from_dict(kind, value, f"{where}, {key}")
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }.get(kind, lambda v: True)
    if not ok(value):
        raise ConfigError(f"{where}: {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return float(value) if kind is float else value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """An instance of the dataclass ``cls`` from ``data``: every key must be a field, every
    field without a default must be given. Errors name the key and ``where``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(fields)})")
    required = [f for f in fields.values() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for f in required:
        if f.name not in data:
            raise ConfigError(f"{where}: missing key {f.name!r}")
    hints = _types(cls)
    values = {k: _check_value(where, k, v, hints[k]) for k, v in data.items()}
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """The plain-dict form of a config dataclass (nested ones included); None values are left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None:
            continue
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else v
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """What every model of this package has: a family (the registry key, cod.families), a
    name, and a condition codec of ``ds`` x ``codebook_bits`` (CoD spec §2.2)."""

    family: str
    name: str | None = None
    ds: int
    codebook_bits: int
    up2x: bool

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
        return from_dict(cls, data, where)

    @classmethod
    def coerce(cls: type[T], config: "Mapping[str, Any] | T", where: str = "config") -> T:
        """``config`` itself when it is already typed, else :meth:`from_dict`."""
        return config if isinstance(config, cls) else from_dict(cls, config, where)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def index_stride(self) -> int:
        """Image pixels per index along a side (the .cod header's ds field)."""
        return index_stride(self.ds, self.up2x)
