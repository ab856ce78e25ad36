"""Arguments shared by the subcommands of `cod` (cod/cli.py, cod/eval/cli.py) and the benchmarks:
one --device, one --unsafe-pickle, one image-size convention (WIDTHxHEIGHT, as image tools print it)."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from cod.errors import CodError


def add_device_arg(p: argparse.ArgumentParser, what: str = "") -> None:
    """--device with the same choices and default everywhere (cod.codec.resolve_device)."""
    from cod.codec import DEVICES

    p.add_argument("--device", default="auto", choices=DEVICES, help=f"device{what} (default: auto, cuda if available, else cpu)")


def add_precision_args(p: argparse.ArgumentParser) -> None:
    """--precision and --max-memory for the commands that run a codec (cod.inference, cod.tiling)."""
    from cod.inference import PRECISIONS

    p.add_argument("--precision", default=None, choices=PRECISIONS, help="CoD-Lite compute: fast (default: the decoder in bf16 where the hardware has it, fp32 elsewhere; the encoder fp32), bf16, or fp32 (the faithful path of the conformance tests); CoD models run fp32")
    p.add_argument("--max-memory", default=None, metavar="SIZE", help="CoD-Lite: memory for the network's activations, like 1.5G or 800M (default 1.5G); larger images are encoded and decoded in blended tiles")


def memory_arg(text: str | None) -> int | None:
    """--max-memory SIZE -> bytes (None: the codec's default)."""
    if text is None:
        return None
    from cod.tiling import parse_memory

    return parse_memory(text)


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


def run_script(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status; a CodError is a one-line ``error: ...`` and status 2
    (for the scripts under benchmarks/)."""
    try:
        status = main()
    except CodError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 2
    sys.exit(status)
