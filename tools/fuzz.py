#!/usr/bin/env python
"""Coverage-guided fuzzing of every reader of untrusted bytes (atheris; docs/reliability.md).

    python tools/fuzz.py --runs 100000                # the long run
    python tools/fuzz.py --max-time 40                # what the test suite runs (tests/test_fuzz.py)
    python tools/fuzz.py --replay DIR_OR_FILE ...     # saved inputs through the targets, once each
    python tools/fuzz.py --replay CORPUS --coverage   # and the line coverage of the readers (coverage.py)

An input is one selector byte (which reader, :data:`TARGETS`) followed by the file's bytes.
The seeds are valid files of every kind, made at start: .cod v1 and v2 (static and context
coding) of both shipped CoD-Lite models and their official layout; CoD pixel files (decode
settings in the header, v1 and v2) and DiffC files (.cod v3) of a tiny random CoD model and its
official layout; the pinned files of tests/data. The mutator is libFuzzer's, or (one time in
five) a rewrite of one header field (version, family, sizes, lengths, coding, settings); then,
most of the time, the container is repaired (payload length and CRC-32 recomputed), so that
mutations reach past the checksum into the index decoders, the DiffC parser and the networks.

Every input must end in an image of the size its header claims, or a CodError. Anything else
(another exception, a wrong size, an input using more than --cpu-limit CPU seconds (20) or
running over --timeout wall seconds, the process's own resident memory over --rss-limit-mb,
sampled every 10 ms) is a finding: libFuzzer stops and writes the input to crash-* / timeout-* /
oom-* in the working folder; add it to tests/data/fuzz/ as a regression test. The codecs here
run with small limits (max_pixels = 128 x 128, max_steps = 64), so that every accepted input
decodes in milliseconds and the limits themselves are fuzzed.

Needs atheris (``pip install 'cod[fuzz]'``). Coverage counts only cod's own modules.
"""
from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FUZZ_MAX_PIXELS = 128 * 128
FUZZ_MAX_STEPS = 64  # the DiffC finish alone is 52 evaluations
FUZZ_SEED = 17


def _import_cod(instrument: bool):
    """Import cod (instrumented for coverage when fuzzing)."""
    if instrument:
        import atheris

        with atheris.instrument_imports(include=["cod"]):
            import cod  # noqa: F401
            import cod.cod_codec  # noqa: F401
            import cod.diffc  # noqa: F401
            import cod.entropy  # noqa: F401
            import cod.families  # noqa: F401
    import cod

    return cod


# ------------------------------------------------------------------ the codecs under test
def _lite_codecs(cod):
    """Both shipped CoD-Lite models, each with an index prior fitted on crops of the test
    photos (so that v2 files exist; the shipped weights carry none)."""
    from cod.entropy import fit_prior
    from cod.families import installed_weights
    from cod.image_io import read_image

    crops = [read_image(p)[:96, :96] for p in sorted((ROOT / "tests" / "data" / "photos").glob("*.jpg"))]
    out = {}
    for name in sorted(n for n in installed_weights() if n.startswith("codlite-small")):
        codec = cod.load(name, max_pixels=FUZZ_MAX_PIXELS)
        grids = [codec.encode(c)[0].reshape(codec.grid(96, 96)) for c in crops]
        codec.prior, _ = fit_prior(grids, codec.bits, groups=4, alphas=(16,))
        out[name] = codec
    return out


def _tiny_cod_codec():
    """A tiny random CoD pixel model (the architecture at small widths), with a prior."""
    import numpy as np
    import torch

    from cod.cod_codec import CoDCodec
    from cod.entropy import fit_prior
    from cod.families import build_network
    from cod.zoo import cod_config

    cfg = cod_config("cod-pixel", "0.0039", hidden_size=64, num_groups=4, num_blocks=3, num_cond_blocks=2, encoder_channels=32, latent_channels=16, hidden_size_x=8, nerf_mlpratio=2)
    cfg["name"] = "fuzz-cod-pixel"
    cfg["decode"]["steps"] = 2
    net = build_network(cfg)
    g = torch.Generator().manual_seed(FUZZ_SEED)
    with torch.no_grad():
        for p in net.parameters():  # no zero-initialised layer: indices and outputs vary
            p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(max(1, int(np.prod(p.shape[1:])))))
    codec = CoDCodec(net, cfg, max_pixels=FUZZ_MAX_PIXELS, max_steps=FUZZ_MAX_STEPS)
    grids = [codec.encode(_image(h, w, s))[0].reshape(codec.grid(h, w)) for s, (h, w) in enumerate([(64, 64), (32, 96)])]
    codec.prior, _ = fit_prior(grids, codec.bits, groups=2, alphas=(16,))
    return codec


def _image(h: int, w: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 100 * np.sin(xx / (7 + seed) + c) * np.cos(yy / 5 - c) for c in range(3)], axis=2)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


class Target:
    """One reader: ``fn(bytes)`` returns an image (PIL) whose size must be ``expect(bytes)``, or
    None for parsers; a CodError is a correct answer."""

    def __init__(self, name: str, fn, expect=None):
        self.name, self.fn, self.expect = name, fn, expect


class Finding(Exception):
    """An input that ended in something other than an image of the claimed size or a CodError."""


def build_targets(cod) -> tuple[list[Target], list[bytes]]:
    """The targets and the seed inputs (selector byte + a valid file) of every kind."""
    from cod import bitstream as bs
    from cod import chroma
    from cod.diffc import DiffCPayload
    from cod.diffc.coding import decode_stream
    from cod.diffc.rcc import max_kl_bits
    from cod.families import family_of_code

    lite = _lite_codecs(cod)
    tiny = _tiny_cod_codec()

    def cod_size(data: bytes) -> tuple[int, int]:
        h = bs.read_cod(data).header
        return h.width, h.height

    def official_size(height_first: bool):
        return lambda data: tuple(reversed(bs.read_official(data, height_first)[:2]))

    def info(data: bytes) -> None:  # what `cod info` reads
        f = bs.read_cod(data)
        fam = family_of_code(f.header.family)
        if fam is not None and f.header.settings:
            fam.codec.describe_settings(f.header.settings)
        if f.diffc is not None:
            DiffCPayload.from_bytes(f.diffc).describe()

    def diffc_payload(data: bytes) -> None:  # the DiffC parser and stream decoder alone
        p = DiffCPayload.from_bytes(data)
        c = p.config
        decode_stream(p.stream, p.n_steps, max_kl_bits(3 * 64 * 64, c.max_chunk_size, c.chunk_padding), c.max_chunk_size, c.chunk_padding)

    targets = [Target("container", info), Target("diffc-payload", diffc_payload)]
    for name, codec in lite.items():
        targets.append(Target(f"{name}/cod", lambda d, c=codec: c.decompress(d), cod_size))
        targets.append(Target(f"{name}/official", lambda d, c=codec: c.decompress(d, format="official"), official_size(False)))
    targets.append(Target("cod-pixel/cod", lambda d: tiny.decompress(d), cod_size))
    targets.append(Target("cod-pixel/official", lambda d: tiny.decompress(d, format="official"), official_size(True)))
    targets.append(Target("chroma-payload", lambda d: chroma.decode(d, 130, 200) and None))  # last: stored selectors keep their targets
    index = {t.name: i for i, t in enumerate(targets)}

    seeds: list[bytes] = []

    def seed(target: str, data: bytes) -> None:
        seeds.append(bytes([index[target]]) + data)

    sizes = [(16, 16), (40, 24), (64, 48), (33, 70)]
    for name, codec in lite.items():
        for i, (h, w) in enumerate(sizes):
            img = _image(h, w, i)
            for entropy in (False, True):
                codec.entropy = entropy
                seed(f"{name}/cod", codec.compress(img))
                seed("container", codec.compress(img))
            if entropy and i == 0:  # the static coding too
                from cod.entropy import CODING_STATIC

                grid = codec.encode(img)[0].reshape(codec.grid(h, w))
                head = bs.CodHeader(codec.family_code, codec.ds, codec.bits, codec.model_tag, h, w, coding=CODING_STATIC, prior_tag=codec.prior.tag)
                seed(f"{name}/cod", bs.write_cod(head, codec.prior.encode(grid, CODING_STATIC)))
            seed(f"{name}/official", codec.compress(img, format="official"))
    for i, block in enumerate((16, 32)):  # the chroma side information of .cod v4 (the target's 130 x 200)
        seed("chroma-payload", chroma.encode(chroma.measure(_image(130, 200, 20 + i), block, 2 + i)))
    for i, (h, w) in enumerate([(32, 32), (48, 16)]):
        img = _image(h, w, 10 + i)
        for entropy in (False, True):
            tiny.entropy = entropy
            seed("cod-pixel/cod", tiny.compress(img))
            if i == 0:  # DiffC (.cod v3) with fixed-length and with range-coded indices
                data = tiny.compress(img, diffc=True, diffc_step=1 + entropy, diffc_chunk=3)
                seed("cod-pixel/cod", data)
                seed("container", data)
                seed("diffc-payload", bs.read_cod(data).diffc)
        seed("cod-pixel/official", tiny.compress(img, format="official"))
    for f in sorted((ROOT / "tests" / "data").glob("*.cod")):
        data = f.read_bytes()
        seed("container", data)
        for name in lite:
            if name in f.name:
                seed(f"{name}/cod", data)
    return targets, seeds


def run_one(targets: list[Target], data: bytes) -> str:
    """Run one input; returns 'image', 'parsed' or the CodError's class name. Raises Finding
    (or lets any other exception through) when the promise is broken."""
    from cod.errors import CodError

    if not data:
        return "empty"
    t = targets[data[0] % len(targets)]
    body = data[1:]
    try:
        out = t.fn(body)
    except CodError as exc:
        return type(exc).__name__
    if t.expect is None:
        return "parsed"
    if out is None or out.mode != "RGB" or out.size != t.expect(body):
        raise Finding(f"{t.name}: decoded {getattr(out, 'size', None)}, the file claims {t.expect(body)}")
    return "image"


# ------------------------------------------------------------------ the mutator
_INTERESTING = [0, 1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 64, 127, 128, 129, 255, 256, 4096, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1]


def _fields(body: bytes) -> dict[str, tuple[int, str]] | None:
    """Offsets and struct formats of a .cod container's header fields (None: not one)."""
    if len(body) < 26 or body[:3] != b"CoD":
        return None
    nset = body[17]
    f = {"version": (3, "B"), "family": (4, "B"), "ds": (5, "B"), "bits": (6, "B"), "tag": (7, ">H"), "height": (9, ">I"), "width": (13, ">I"), "nset": (17, "B")}
    pos = 18 + nset
    if body[3] in (2, 3):
        f.update(coding=(pos, "B"), prior_tag=(pos + 1, ">H"))
        pos += 3
    if body[3] == 3:
        f["index_len"] = (pos, ">I")
        pos += 4
    if nset == 12:
        f.update(settings_version=(18, "B"), sampler=(19, "B"), steps=(20, ">H"), seed=(26, ">I"))
    f["payload_len"] = (pos, ">I")
    return f


def repair(body: bytes) -> bytes:
    """A .cod container with its payload length and CRC-32 made right (else unchanged)."""
    f = _fields(body)
    if f is None:
        return body
    pos = f["payload_len"][0]
    if len(body) < pos + 8:
        return body
    payload = body[pos + 8 :]
    head = body[:pos] + struct.pack(">I", len(payload))
    return head + struct.pack(">I", zlib.crc32(payload, zlib.crc32(head))) + payload


def tweak(body: bytes, rng: random.Random) -> bytes:
    """Set one header field to an interesting value (official layout: one of the sides)."""
    f = _fields(body)
    if f is None:
        if len(body) >= 4:
            at = rng.choice([0, 2])
            body = body[:at] + struct.pack("<H", rng.choice(_INTERESTING) & 0xFFFF) + body[at + 2 :]
        return body
    name = rng.choice(sorted(f))
    at, fmt = f[name]
    size = struct.calcsize(fmt)
    value = rng.choice(_INTERESTING + [rng.randrange(2 ** (8 * size))]) % 2 ** (8 * size)
    if name in ("height", "width") and rng.random() < 0.7:
        value = rng.randrange(1, 160)  # near the limit, so that the networks run
    return body[:at] + struct.pack(fmt, value) + body[at + size :]


def make_mutator(atheris):
    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        sel, body = (data[:1] or b"\0"), data[1:]
        if rng.random() < 0.02:
            sel = bytes([rng.randrange(256)])
        if rng.random() < 0.2:
            body = tweak(body, rng)
        else:
            body = atheris.Mutate(body, max(1, max_size - 1))
        if rng.random() < 0.8:
            body = repair(body)
        return sel + body

    return mutate


# ------------------------------------------------------------------ main
#: The modules that read untrusted bytes, for --coverage.
READERS = ["bitstream.py", "codec.py", "cod_codec.py", "entropy.py", "limits.py", "diffusion/settings.py", "diffc/payload.py", "diffc/coding.py", "diffc/chain.py"]


class RssWatch:
    """The process's current resident memory, sampled every 10 ms in a thread (the sampling
    goes on while a torch operator runs), and its peak since :meth:`reset`.

    libFuzzer's own -rss_limit_mb reads the *peak* RSS of the process (getrusage), which Linux
    carries over fork and exec: a fuzzer started by a large process (pytest after the memory
    tests) starts "over the limit". This watch measures this process's own pages."""

    def __init__(self) -> None:
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.now()
        threading.Thread(target=self._run, daemon=True, name="rss-watch").start()

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def reset(self) -> None:
        self.peak = self.now()

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    import resource

    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # the parent's peak, carried over exec
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=None, help="inputs to run (default: until --max-time)")
    ap.add_argument("--max-time", type=int, default=None, help="seconds to fuzz (libFuzzer -max_total_time)")
    ap.add_argument("--cpu-limit", type=float, default=20.0, help="CPU seconds one input may take (default 20; the slowest accepted inputs, 64 network evaluations, take about 2 s)")
    ap.add_argument("--timeout", type=int, default=600, help="wall seconds one input may take before libFuzzer calls it a hang (default 600: on a shared machine a niced fuzzer can be starved)")
    ap.add_argument("--rss-limit-mb", type=int, default=3072, help="memory of the whole process (default 3072; the models and torch take about 700)")
    ap.add_argument("--corpus", default=None, help="corpus folder to keep (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=1, help="libFuzzer -seed")
    ap.add_argument("--replay", nargs="*", default=None, help="run these inputs (files or folders) once each, without fuzzing")
    ap.add_argument("--coverage", action="store_true", help="with --replay: line coverage of the reader modules by the inputs (coverage.py; seeds made before it starts)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    fuzzing = args.replay is None
    if args.coverage:
        global COVERAGE
        import coverage

        COVERAGE = coverage.Coverage(include=[str(ROOT / "cod" / m) for m in READERS])
        COVERAGE.start()  # before cod's import (its module-level lines count); seeds are made under another context
    cod = _import_cod(instrument=fuzzing)
    if args.coverage:
        COVERAGE.switch_context("seeds")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="cod-fuzz-") as tmp:
        targets, seeds = build_targets(cod)
        print(f"{len(targets)} targets: {', '.join(t.name for t in targets)}; {len(seeds)} seeds, built in {time.time() - t0:.1f} s", flush=True)
        if not fuzzing:
            paths = [Path(p) for p in args.replay] or [ROOT / "tests" / "data" / "fuzz"]
            if not args.coverage:
                return replay(targets, paths)
            COVERAGE.switch_context("replay")
            rc = replay(targets, paths)
            COVERAGE.stop()
            report_coverage(COVERAGE)
            return rc
        import atheris

        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds):
            (corpus / f"seed-{i:03d}").write_bytes(s)
        counts: dict[str, int] = {}
        every = 10000 if (args.runs or 0) >= 50000 else 2000
        slowest = [0.0]

        watch = RssWatch()

        def test_one_input(data: bytes) -> None:
            cpu = time.process_time()
            watch.reset()
            r = run_one(targets, data)
            cpu = time.process_time() - cpu
            if cpu > args.cpu_limit:  # CPU time, not wall time: a shared machine may starve us
                raise Finding(f"an input took {cpu:.1f} s of CPU, above --cpu-limit {args.cpu_limit}")
            if watch.peak > args.rss_limit_mb * 2**20:
                raise Finding(f"an input took the process to {watch.peak / 2**20:.0f} MB of resident memory, above --rss-limit-mb {args.rss_limit_mb}")
            slowest[0] = max(slowest[0], cpu)
            counts[r] = counts.get(r, 0) + 1
            n = sum(counts.values())
            if n % every == 0 or (n >= 64 and n & (n - 1) == 0):  # libFuzzer exits without Python's exit handlers
                print(f"outcomes after {n} inputs ({time.time() - t0:.0f} s; slowest input {slowest[0]:.2f} s of CPU): {dict(sorted(counts.items(), key=lambda kv: -kv[1]))}", flush=True)

        flags = [sys.argv[0], str(corpus), f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb + inherited_mb}", f"-seed={args.seed}", "-max_len=4096", "-print_final_stats=1"]
        if args.runs is not None:
            flags.append(f"-runs={args.runs}")
        if args.max_time is not None:
            flags.append(f"-max_total_time={args.max_time}")
        atheris.Setup(flags, test_one_input, custom_mutator=make_mutator(atheris))
        atheris.Fuzz()
    return 0


COVERAGE = None


def report_coverage(cov) -> None:
    """Line coverage of the reader modules by the replayed inputs: lines run while importing
    cod or while replaying (not those run only to make the seeds)."""
    data = cov.get_data()
    data.set_query_contexts(["^$", "^replay$"])
    print(f"{'module':<24} {'lines':>6} {'run':>6} {'cover':>6}")
    total = hit = 0
    for m in READERS:
        f = str(ROOT / "cod" / m)
        statements = set(cov.analysis2(f)[1])
        lines = set(data.lines(f) or ()) & statements
        total += len(statements)
        hit += len(lines)
        print(f"{m:<24} {len(statements):>6} {len(lines):>6} {100 * len(lines) / max(1, len(statements)):>5.0f}%")
    print(f"{'all':<24} {total:>6} {hit:>6} {100 * hit / max(1, total):>5.0f}%")


def replay(targets: list[Target], paths: list[Path]) -> int:
    """Run saved inputs once each; print each outcome; non-zero if any broke the promise."""
    files = [f for p in paths for f in (sorted(p.iterdir()) if p.is_dir() else [p]) if f.is_file() and f.suffix != ".md"]
    bad = 0
    for f in files:
        try:
            r = run_one(targets, f.read_bytes())
        except Exception as exc:  # noqa: BLE001
            bad += 1
            r = f"FINDING {type(exc).__name__}: {exc}"
        print(f"{f.name}: {r}")
    print(f"{len(files)} inputs, {bad} findings")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
