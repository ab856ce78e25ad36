"""Peak resident memory of CoD-Lite compress and decompress on a large image (issue 16).

    python benchmarks/memory.py                                  # 7680x4320, every CoD-Lite rate
    python benchmarks/memory.py --sizes 3840x2160 --models codlite-0.0312 --max-memory 800M
    python benchmarks/memory.py --decode-only --threads 1            # decode side only (8K encodes are slow)

Every measurement runs in a fresh process (``python benchmarks/memory.py --child ...``) so
that its peak RSS (``ru_maxrss``: weights, image buffers, activations, allocator caches, all
of it) belongs to that one call: one process compresses a synthetic photo-like image to a
temporary .cod file, a second one decompresses it. Random weights of the full-size models
(memory does not depend on the values). Prints one row per model and size, and the tiles the
codec chose (cod.lite_pipeline), next to the limit (default 4 GiB). ``--decode-only`` skips
compress and decodes a valid file of all-zero indices (the same work as any file). A child
starts from its parent's peak (Linux keeps ru_maxrss across exec): this parent's is about
0.5 GiB, far below the figures measured.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cod.cliargs import parse_size, run_script  # noqa: E402
from cod.limits import parse_memory  # noqa: E402
from cod.zoo import RATES  # noqa: E402


def child(args: argparse.Namespace) -> int:
    """One measured call: compress (image -> file) or decompress (file -> image)."""
    import cod  # before torch: its environment defaults (cod/__init__.py)
    import torch
    from cod.eval.speed import synthetic_image
    from cod.lite_pipeline import condition_plan, encode_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    kw = {"max_memory": parse_memory(args.max_memory)} if args.max_memory else {}
    codec = cod.load(args.models, random_init=True, precision=args.precision, **kw)
    h, w = parse_size(args.sizes, "--sizes")
    t0 = time.perf_counter()
    if args.child == "compress":
        img = synthetic_image(h, w)
        Path(args.file).write_bytes(codec.compress(img))
        plan = encode_plan(codec.engine, -(-h // codec.multiple) * codec.multiple, -(-w // codec.multiple) * codec.multiple, codec.ds, codec.multiple, codec.model.attention_window, codec.activation_budget(h, w))
    else:
        if args.zero_indices:  # --decode-only: a valid file of all-zero indices (decoding does the same work)
            from cod import bitstream as bs

            gh, gw = codec.grid(h, w)
            Path(args.file).write_bytes(bs.write_cod(bs.CodHeader(codec.family_code, codec.ds, codec.bits, codec.model_tag, h, w), bytes(bs.packed_size(gh * gw, codec.bits))))
        data = Path(args.file).read_bytes()
        img = codec.decompress(data)
        assert img.size == (w, h), img.size
        plan = condition_plan(codec.engine, codec.parse(data)[3], codec.ds, codec.multiple, codec.model.attention_window, codec.activation_budget(h, w))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": peak, "seconds": seconds, "tiles": f"{len(plan.rows)}x{len(plan.cols)}", "precision": codec.plan.describe(), "budget": codec.activation_budget(h, w)}))
    return 0


def measure(op: str, model: str, size: str, file: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", op, "--models", model, "--sizes", size, "--file", file, "--precision", args.precision]
    cmd += ["--max-memory", args.max_memory] if args.max_memory else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    cmd += ["--zero-indices"] if args.decode_only else []
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(f"codlite-{r}" for r in RATES), help="comma-separated model names (default: every CoD-Lite rate, full size)")
    ap.add_argument("--sizes", default="7680x4320", help="comma-separated WIDTHxHEIGHT")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--max-memory", default=None, help="the codec's memory limit (cod --max-memory; its tiles are sized from it); default the codec's, 4G")
    ap.add_argument("--limit", default="4G", help="the peak RSS to stay within (default 4G)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--decode-only", action="store_true", help="skip compress (slow at 8K on a small CPU): decode a valid file of all-zero indices claiming the size")
    ap.add_argument("--compress-only", action="store_true", help="skip decompress (decode peaks are measured faster with --decode-only)")
    ap.add_argument("--zero-indices", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=("compress", "decompress"), help=argparse.SUPPRESS)
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.decode_only and args.compress_only:
        ap.error("--decode-only and --compress-only exclude each other")
    if args.child:
        return child(args)
    limit = parse_memory(args.limit, "--limit")
    from cod.eval.speed import cpu_model

    print(f"CPU {cpu_model()}, {os.cpu_count()} logical CPUs; peak RSS of a fresh process per call (ru_maxrss); limit {limit / 2**30:.2f} GiB")
    print(f"{'model':<16} {'size':>10} | {'compress GiB':>12} {'s':>6} {'tiles':>6} | {'decompress GiB':>14} {'s':>6} {'tiles':>6} | within")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for size in args.sizes.split(","):
                f = str(Path(tmp) / "x.cod")
                enc = {"skipped": True} if args.decode_only else measure("compress", model, size, f, args)
                dec = {"skipped": True} if args.compress_only else measure("decompress", model, size, f, args) if "error" not in enc else {"error": "no file"}
                cells = []
                for r in (enc, dec):
                    cells.append(f"{'not run':>27}" if "skipped" in r else f"{'error: ' + r['error']:>27}" if "error" in r else f"{r['peak_bytes'] / 2**30:>12.2f} {r['seconds']:>6.0f} {r['tiles']:>6}")
                within = all("error" not in r and r.get("peak_bytes", 0) <= limit for r in (enc, dec))
                ok &= within
                print(f"{model:<16} {size:>10} | {cells[0]} | {cells[1]:>29} | {'yes' if within else 'NO'}", flush=True)
        last = enc if args.compress_only else dec
        print(f"precision {last.get('precision', args.precision)}; activation budget {last.get('budget', 0) / 2**20:.0f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    run_script(main)
