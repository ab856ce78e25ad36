"""Encode/decode latency and peak memory of one codec at one image size.

CPU: wall time with ``time.perf_counter``; peak memory = the highest resident set size
(psutil, sampled every millisecond in a thread) during one more, untimed call minus the RSS
before it (the sampler stays out of the timed runs).
CUDA: the device is synchronised before and after every call; peak memory is
``torch.cuda.max_memory_allocated`` during the timed runs minus the memory allocated before them.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from cod.codec import resolve_device
from cod.errors import CodError


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like test image: smooth colour fields plus fine texture."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC))
    # in bands of rows: float64 copies of a whole 8K image took ~3 GB, more than the codec
    # (benchmarks/memory.py measures the peak of the whole process); the generator draws the
    # same numbers band by band as in one call
    out = np.empty((height, width, 3), dtype=np.uint8)
    for r in range(0, height, 256):
        band = smooth[r : r + 256].astype(np.float64)
        band += rng.normal(0.0, 12.0, size=band.shape)
        np.clip(band, 0, 255, out=band)
        out[r : r + 256] = band
    return out


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware_info(device: torch.device) -> dict[str, Any]:
    """CPU model, logical CPUs and, on CUDA, the GPU's name."""
    info: dict[str, Any] = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "gpu": None}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _stats_ms(seconds: list[float]) -> dict[str, Any]:
    ms = np.asarray(seconds) * 1000.0
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return {"median": float(med), "min": float(ms.min()), "max": float(ms.max()), "q1": float(q1), "q3": float(q3), "all": [float(x) for x in ms]}


def rss_bytes() -> int:
    """This process's resident set size now (psutil)."""
    import psutil

    return psutil.Process().memory_info().rss


class PeakRss:
    """The one RSS sampler: this process's RSS sampled in a background thread while the block
    runs (``with PeakRss() as mem: ...``); ``peak`` and ``start_rss`` in bytes,
    ``peak_delta_mb`` the peak above the RSS at the start, in MiB."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self._interval = interval_s
        self._stop = threading.Event()
        self.start_rss = rss_bytes()
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self._interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def peak_delta_mb(self) -> float:
        return (self.peak - self.start_rss) / 2**20


def _timed_runs(fn: Callable[[], Any], runs: int, device: torch.device) -> tuple[list[float], float, Any]:
    """Run ``fn`` ``runs`` times; (seconds per run, peak memory delta in MiB, last result).
    On a CPU the timed runs go without the RSS sampler (its thread would take CPU time from
    the network); one more, untimed call measures the peak."""
    cuda = device.type == "cuda"
    times: list[float] = []
    out = None
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    if cuda:
        sync()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    if cuda:
        return times, (torch.cuda.max_memory_allocated(device) - base) / 2**20, out
    with PeakRss() as mem:
        fn()
    return times, mem.peak_delta_mb, out


def _dtype_of(codec: Any) -> str:
    plan = getattr(codec, "plan", None)
    if plan is not None and hasattr(plan, "describe"):
        return plan.describe()
    model = getattr(codec, "model", None)
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return str(p.dtype).replace("torch.", "")
    return "n/a (classical codec, uint8 pixels)"


def speed(
    codec: Any,
    size: tuple[int, int] = (1024, 1920),
    warmup: int = 2,
    runs: int = 10,
    device: str | torch.device | None = None,
    image: np.ndarray | None = None,
) -> dict[str, Any]:
    """Time ``codec.compress``/``decompress`` on one HxW image; returns a JSON-able report.

    ``device`` defaults to the codec's ``.device`` (else cpu); the first ``warmup`` calls of
    each are not timed. ``image`` defaults to :func:`synthetic_image` of ``size``.
    """
    if runs < 1 or warmup < 0:
        raise CodError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    dev = resolve_device(device if device is not None else getattr(codec, "device", "cpu"))
    h, w = size
    if h < 1 or w < 1:
        raise CodError(f"image size must be positive, got {w}x{h}")
    img = synthetic_image(h, w) if image is None else image
    if img.shape[:2] != (h, w):
        raise CodError(f"image is {img.shape[1]}x{img.shape[0]}, expected {w}x{h}")

    data = b""
    for _ in range(warmup):
        data = codec.compress(img)
        codec.decompress(data)
    enc_times, enc_mem, data = _timed_runs(lambda: codec.compress(img), runs, dev)
    dec_times, dec_mem, _ = _timed_runs(lambda: codec.decompress(data), runs, dev)
    return {
        "codec": str(getattr(codec, "name", type(codec).__name__)),
        "size": [h, w],
        "device": str(dev),
        "hardware": hardware_info(dev),
        "threads": torch.get_num_threads(),
        "dtype": _dtype_of(codec),
        "torch": torch.__version__,
        "warmup": warmup,
        "runs": runs,
        "encode_ms": _stats_ms(enc_times),
        "decode_ms": _stats_ms(dec_times),
        "bytes": len(data),
        "bpp": 8.0 * len(data) / (h * w),
        "peak_memory": {
            "kind": "cuda max_memory_allocated delta" if dev.type == "cuda" else "process RSS peak delta",
            "encode_mib": enc_mem,
            "decode_mib": dec_mem,
        },
    }


def compare(codecs: dict[str, Any], size: tuple[int, int], warmup: int = 1, runs: int = 5, device: str | torch.device | None = None, image: np.ndarray | None = None) -> dict[str, Any]:
    """Time several codecs side by side on one HxW image: ``warmup`` untimed round trips each,
    then ``runs`` rounds in which every codec compresses and then every codec decompresses the
    first codec's file, the order reversed every other round (ABBA), so that a machine whose
    load drifts slows all of them alike. Returns the per-codec stats, every ratio to the first
    codec's median (first / other: > 1 means faster than the first) and, untimed, each codec's
    accuracy against the first: the PSNR of its decode of the first's file against the first's
    decode (``decode_psnr_db``) and the fraction of positions where its encoder picks the
    first's index (``same_index``). The codecs must share a bitstream layout."""
    if runs < 1 or warmup < 0 or not codecs:
        raise CodError(f"need codecs, runs >= 1 and warmup >= 0, got {len(codecs)} codecs, runs={runs}, warmup={warmup}")
    names = list(codecs)
    dev = resolve_device(device if device is not None else getattr(codecs[names[0]], "device", "cpu"))
    h, w = size
    img = synthetic_image(h, w) if image is None else image
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    data = codecs[names[0]].compress(img)
    for _ in range(warmup):
        for c in codecs.values():
            c.decompress(c.compress(img))
    enc: dict[str, list[float]] = {n: [] for n in names}
    dec: dict[str, list[float]] = {n: [] for n in names}
    last: dict[str, dict[str, Any]] = {"enc": {}, "dec": {}}  # the last file / image of each codec
    for r in range(runs):
        order = names if r % 2 == 0 else names[::-1]
        for what, store in (("enc", enc), ("dec", dec)):
            for n in order:
                sync()
                t0 = time.perf_counter()
                out = codecs[n].compress(img) if what == "enc" else codecs[n].decompress(data)
                sync()
                store[n].append(time.perf_counter() - t0)
                last[what][n] = out
                if what == "enc" and n == names[0]:
                    data = out
    # accuracy against the first codec: each one's decode of the first's file, and its indices
    ref_img = np.asarray(last["dec"][names[0]], dtype=np.float64)
    ref_idx = codecs[names[0]].parse(data)[0]
    acc = {}
    for n in names:
        mse = float(np.mean((np.asarray(last["dec"][n], dtype=np.float64) - ref_img) ** 2))
        same = float(np.mean(codecs[n].parse(last["enc"][n])[0] == ref_idx))
        acc[n] = {"decode_psnr_db": float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse)), "same_index": same}
    e0, d0 = np.median(enc[names[0]]), np.median(dec[names[0]])
    return {
        "size": [h, w],
        "device": str(dev),
        "hardware": hardware_info(dev),
        "threads": torch.get_num_threads(),
        "warmup": warmup,
        "runs": runs,
        "codecs": {
            n: {
                "dtype": _dtype_of(codecs[n]),
                "encode_ms": _stats_ms(enc[n]),
                "decode_ms": _stats_ms(dec[n]),
                "encode_speedup": float(e0 / np.median(enc[n])),
                "decode_speedup": float(d0 / np.median(dec[n])),
                **acc[n],
            }
            for n in names
        },
    }


def format_speed(report: dict[str, Any]) -> str:
    """A short human-readable summary of a :func:`speed` report."""
    hw = report["hardware"]
    where = hw["gpu"] or hw["cpu"]
    h, w = report["size"]
    lines = [
        f"{report['codec']} at {w}x{h} on {report['device']} ({where}), {report['threads']} threads, dtype {report['dtype']}",
        f"warm-up {report['warmup']}, timed runs {report['runs']}; {report['bytes']} bytes = {report['bpp']:.4f} bpp",
    ]
    for key, label in (("encode_ms", "encode"), ("decode_ms", "decode")):
        s = report[key]
        lines.append(f"{label}: median {s['median']:.1f} ms (IQR {s['q1']:.1f}-{s['q3']:.1f}, min {s['min']:.1f}, max {s['max']:.1f})")
    mem = report["peak_memory"]
    lines.append(f"peak memory ({mem['kind']}): encode {mem['encode_mib']:.1f} MiB, decode {mem['decode_mib']:.1f} MiB")
    return "\n".join(lines)
