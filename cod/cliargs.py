"""Arguments shared by the subcommands of `cod` (cod/cli.py, cod/eval/cli.py) and the benchmarks:
one --device, one --unsafe-pickle, one --force with one rule for existing outputs, one image-size
convention (WIDTHxHEIGHT, as image tools print it). No torch here: `cod --help` stays fast."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Iterable

from cod.errors import CodError, UsageError


def add_device_arg(p: argparse.ArgumentParser, what: str = "") -> None:
    """--device with the same choices and default everywhere (cod.codec.resolve_device)."""
    from cod.zoo import DEVICES

    p.add_argument("--device", default="auto", choices=DEVICES, help=f"device{what} (default: auto, cuda if available, else cpu)")


def add_precision_args(p: argparse.ArgumentParser) -> None:
    """--precision for the commands that run a codec (cod.inference); --max-memory is a limit
    (add_limit_args), from which CoD-Lite also sizes its tiles."""
    from cod.zoo import PRECISIONS

    p.add_argument("--precision", default=None, choices=PRECISIONS, help="CoD-Lite compute: fast (default: bf16 where the hardware has it, fp32 elsewhere; the encoder keeps its input layer and residual stream in fp32), bf16 (all of it), or fp32 (the faithful path of the conformance tests); CoD models run fp32")


def add_unsafe_pickle_arg(p: argparse.ArgumentParser) -> None:
    """--unsafe-pickle, for every command that accepts an official .pt."""
    p.add_argument("--unsafe-pickle", action="store_true", help="allow arbitrary pickled objects in an official .pt (only for files you trust)")


def add_limit_args(p: argparse.ArgumentParser, memory: bool = True) -> None:
    """--max-pixels (and --max-memory) with the defaults of cod.limits."""
    from cod.limits import DEFAULT_MAX_MEMORY, DEFAULT_MAX_PIXELS, format_bytes

    p.add_argument("--max-pixels", default=None, metavar="N", help=f"largest image a file may claim or an input may have, like 179M, 16384x8192 or none (default {DEFAULT_MAX_PIXELS / 1e6:.0f}M, Pillow's decompression-bomb limit; $COD_MAX_PIXELS)")
    if memory:
        p.add_argument("--max-memory", default=None, metavar="SIZE", help=f"working memory of a decode (and encode), like 4G, 800M or none: CoD-Lite works in tiles sized from it, a decode that cannot fit even so is refused before it starts (default {format_bytes(DEFAULT_MAX_MEMORY)}; $COD_MAX_MEMORY)")


def limit_kwargs(args: argparse.Namespace) -> dict:
    """The --max-pixels / --max-memory given, as cod.load keywords ('none': no limit)."""
    from cod.limits import parse_count, parse_memory

    out: dict = {}
    for flag, key, parse in (("--max-pixels", "max_pixels", parse_count), ("--max-memory", "max_memory", parse_memory)):
        text = getattr(args, key, None)
        if text is not None:
            out[key] = None if str(text).strip().lower() == "none" else parse(text, flag)
    return out


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """An image size written WIDTHxHEIGHT ('1920x1024') -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"{flag}: expected WIDTHxHEIGHT like 1920x1024, got {text!r}") from None
    if w < 1 or h < 1:
        raise UsageError(f"{flag}: width and height must be positive, got {text!r}")
    return h, w


def add_force_arg(p: argparse.ArgumentParser, what: str = "output files") -> None:
    """--force: the one way to let a command replace existing files (see :func:`refuse_existing`)."""
    p.add_argument("--force", "-f", action="store_true", help=f"replace existing {what} (default: refuse, naming the file)")


def refuse_existing(paths: Iterable[str | Path], force: bool, hint: str = "pass --force to replace it") -> None:
    """No silent overwrite: a UsageError naming the first of ``paths`` that exists (and how many
    more do), unless ``force``. Called before any work, so a refused command changes nothing."""
    if force:
        return
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]} exists{more}; {hint}")


def run_script(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s status; a CodError is a one-line ``error: ...`` and status 2
    (for the scripts under benchmarks/)."""
    try:
        status = main()
    except CodError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 2
    sys.exit(status)
