"""Arguments shared by the subcommands of `cod` (cod/cli.py, cod/eval/cli.py) and the benchmarks:
one --device, one --unsafe-pickle, one image-size convention (WIDTHxHEIGHT, as image tools print it)."""
from __future__ import annotations

import argparse

from cod.errors import CodError


def add_device_arg(p: argparse.ArgumentParser, what: str = "") -> None:
    """--device with the same choices and default everywhere (cod.codec.resolve_device)."""
    from cod.codec import DEVICES

    p.add_argument("--device", default="auto", choices=DEVICES, help=f"device{what} (default: auto, cuda if available, else cpu)")


def add_unsafe_pickle_arg(p: argparse.ArgumentParser) -> None:
    """--unsafe-pickle, for every command that accepts an official .pt."""
    p.add_argument("--unsafe-pickle", action="store_true", help="allow arbitrary pickled objects in an official .pt (only for files you trust)")


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """An image size written WIDTHxHEIGHT ('1920x1024') -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CodError(f"{flag}: expected WIDTHxHEIGHT like 1920x1024, got {text!r}") from None
    if w < 1 or h < 1:
        raise CodError(f"{flag}: width and height must be positive, got {text!r}")
    return h, w
