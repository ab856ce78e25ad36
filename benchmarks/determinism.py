"""What thread-independent decoding (cod.nn.determinism) costs, and what differs across CPUs.

    python benchmarks/determinism.py [--model NAME] [--threads 1 2] [--repeats 5] [--size 768x512]
    python benchmarks/determinism.py --isas AVX512_CORE_AMX AVX512_CORE AVX2 SSE41

For each thread count: the same file decoded plainly (oneDNN / MKL free to split sums by the
thread count) and inside ``thread_independent`` (the default of every codec), alternating,
``--repeats`` times each; prints median seconds, the ratio fixed / plain, and how many pixels
of the plain decode differ from the 1-thread plain decode. Prints a Markdown table.

``--isas``: the same file decoded (thread-independent) in one process per instruction set,
oneDNN and MKL held to it (ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS): what another CPU may
decode differently, as pixels differing from the first ISA and the largest difference in levels.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cod  # noqa: E402,I001  (before torch: its environment defaults, cod/__init__.py)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cod.cliargs import parse_size  # noqa: E402
from cod.eval.speed import cpu_model, synthetic_image  # noqa: E402


MKL_ISA = {"AVX512_CORE_AMX": "AVX512_E4", "AVX512_CORE_BF16": "AVX512_E3", "AVX512_CORE_VNNI": "AVX512_E1", "AVX512_CORE": "AVX512", "AVX2": "AVX2", "AVX": "AVX", "SSE41": "SSE4_2"}


def isa_table(args: argparse.Namespace) -> None:
    """One process per ISA: decode the same file (made here), and encode the same image."""
    import tempfile

    h, w = parse_size(args.size)
    codec = cod.load(args.model, device="cpu")
    data = codec.compress(synthetic_image(h, w))
    outs, same_bytes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "x.cod"
        src.write_bytes(data)
        for isa in args.isas:
            env = dict(os.environ, ONEDNN_MAX_CPU_ISA=isa, MKL_ENABLE_INSTRUCTIONS=MKL_ISA.get(isa, isa), OMP_NUM_THREADS="1")
            out = Path(tmp) / f"{isa}.npy"
            cmd = [sys.executable, __file__, "--decode", str(src), "--to", str(out), "--size", args.size] + (["--model", args.model] if args.model else [])
            subprocess.run(cmd, env=env, check=True)
            outs[isa] = np.load(out).astype(int)
            same_bytes[isa] = out.with_suffix(".cod").read_bytes() == data
    first = args.isas[0]
    print(f"CPU: {cpu_model()}; {args.size}; one file decoded under each ISA, compared with {first}")
    print("| ISA (oneDNN / MKL) | pixels differing | largest difference (levels) | encode byte-identical |")
    print("|---|---|---|---|")
    for isa, o in outs.items():
        d = np.abs(o - outs[first])
        print(f"| {isa} / {MKL_ISA.get(isa, isa)} | {int((d > 0).any(-1).sum())} of {d.shape[0] * d.shape[1]} | {int(d.max())} | {same_bytes[isa]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isas", nargs="+", default=None, help="oneDNN ISA names to compare (one process each)")
    ap.add_argument("--decode", default=None, help=argparse.SUPPRESS)  # --isas: a child decodes this file
    ap.add_argument("--to", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the synthetic photo-like image")
    args = ap.parse_args()
    if args.isas:
        return isa_table(args)
    h, w = parse_size(args.size)
    codec = cod.load(args.model, device="cpu")
    torch.set_num_threads(1 if args.decode else torch.get_num_threads())
    data = codec.compress(synthetic_image(h, w))
    if args.decode:
        np.save(args.to, np.asarray(codec.decompress(Path(args.decode).read_bytes())))
        Path(args.to).with_suffix(".cod").write_bytes(data)
        return None
    idx, H, W, grid = codec.parse(data)
    plain = type(codec).decode.__wrapped__  # the decode without the thread_independent context
    print(f"CPU: {cpu_model()}; model {codec.name}; {w}x{h}; torch {torch.__version__}")
    print("| threads | plain s | fixed s | fixed / plain | plain pixels differing from 1 thread |")
    print("|---|---|---|---|---|")
    reference = None
    for t in args.threads:
        torch.set_num_threads(t)
        times: dict[str, list[float]] = {"plain": [], "fixed": []}
        outs = {}
        for _ in range(args.repeats):
            for kind, fn in (("plain", lambda: plain(codec, idx, H, W, grid)), ("fixed", lambda: codec.decode(idx, H, W, grid))):
                t0 = time.perf_counter()
                outs[kind] = fn()
                times[kind].append(time.perf_counter() - t0)
        if reference is None:
            reference = outs["plain"]
        differ = int((outs["plain"] != reference).any(-1).sum())
        p, f = float(np.median(times["plain"])), float(np.median(times["fixed"]))
        print(f"| {t} | {p:.3f} | {f:.3f} | {f / p:.2f} | {differ} |")


if __name__ == "__main__":
    main()
