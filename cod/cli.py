"""The `cod` command: compress, decompress, evaluate, info, convert, models, train, and the
evaluation commands of cod/eval/cli.py (bench, plot, bdrate, speed).

Exit codes (cod.errors): 0 success, 1 runtime error, 2 usage error, 3 internal error, 130
interrupted. No command replaces an existing file unless --force (:func:`plan_outputs`,
cod.cliargs.refuse_existing). Nothing here imports torch at module level, so `cod --help` and
`cod info` stay fast; a command imports what it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from cod.cliargs import add_device_arg, add_force_arg, add_limit_args, add_precision_args, add_unsafe_pickle_arg, limit_kwargs, refuse_existing
from cod.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, CodError, UsageError

IMAGE_OUT_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
FAMILIES_HELP = """two families of models:
  CoD-Lite  one-step convolutional decoder (codlite-*), real time
  CoD       pixel and latent diffusion transformers (cod-pixel-*, cod-latent-*), multi-step"""


def _progress(items: list, desc: str) -> Iterable:
    if len(items) <= 1:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", file=sys.stderr, disable=None)  # bar on terminals only


def _error(msg: str) -> None:
    """One error line on stderr, without breaking an active progress bar."""
    from tqdm import tqdm

    tqdm.write(f"error: {msg}", file=sys.stderr)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from cod.zoo import MODELS

    p.add_argument("--model", "-m", default=None, help=f"model name, CoD-Lite or CoD ({', '.join(MODELS)}); default: from --weights, else the installed default model, and for decompress the installed model that wrote the file")
    p.add_argument("--weights", "-w", default=None, help="our .safetensors (from `cod convert`) or an official .pt; default: the installed weights")
    p.add_argument("--config", default=None, help="official .yaml for an official .pt (default: next to it)")
    add_unsafe_pickle_arg(p)
    add_device_arg(p)
    p.add_argument("--vae", default=None, help="CoD latent models: folder of the SD VAE (sd-vae-ft-ema); default $COD_VAE_DIR")
    add_precision_args(p)


def _add_decode_args(p: argparse.ArgumentParser, where: str) -> None:
    from cod.diffusion.settings import SAMPLER_IDS
    from cod.zoo import COD_CFG, COD_DECODE

    cfgs = ", ".join(f"{v:g}" for v in dict.fromkeys([COD_DECODE["cfg"], *COD_CFG.values()]))
    g = p.add_argument_group(f"CoD multi-step decoding ({where})")
    g.add_argument("--steps", type=int, default=None, help=f"sampling steps (default: the model's, {COD_DECODE['steps']})")
    g.add_argument("--cfg", type=float, default=None, help=f"classifier-free guidance scale (default: the model's, {cfgs})")
    g.add_argument("--sampler", default=None, choices=list(SAMPLER_IDS), help=f"default: the model's, {COD_DECODE['sampler']}")
    g.add_argument("--seed", type=int, default=None, help=f"initial-noise seed (default: the model's, {COD_DECODE['seed']})")


def _add_batch_args(p: argparse.ArgumentParser, quiet: bool = True) -> None:
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="no line per file; errors and, when something failed, the summary only")
    p.add_argument("-v", "--verbose", action="store_true", help="also name the files of the folders that were skipped")


def _decode_kwargs(args: argparse.Namespace, codec) -> dict[str, Any]:
    """--steps/--cfg/--sampler/--seed for CoD codecs; an error for CoD-Lite (one step, no noise)."""
    kw = {k: getattr(args, k, None) for k in ("steps", "cfg", "sampler", "seed")}
    kw = {k: v for k, v in kw.items() if v is not None}
    if kw and not hasattr(codec, "default_settings"):
        raise UsageError(f"{', '.join('--' + k for k in kw)}: {codec.name} decodes in one deterministic step; these apply to CoD models")
    return kw


def _add_diffc_args(p: argparse.ArgumentParser) -> None:
    from cod.diffc.payload import CPU_MAX_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

    g = p.add_argument_group("DiffC (CoD models): code the reverse diffusion chain after the indices, for any rate above theirs (docs/diffc.md)")
    g.add_argument("--diffc", action="store_true", help="write a DiffC file (.cod v3) at the rate --bpp or --diffc-step; decompress needs no flags")
    g.add_argument("--bpp", type=float, default=None, help="target rate of the whole file (header included), bits per pixel of the original image; lands within a step of the chain")
    g.add_argument("--diffc-step", type=int, default=None, metavar="N", help="code N steps of the chain instead of a target rate (0..142 pixel, 0..160 latent)")
    g.add_argument("--diffc-chunk", type=int, default=None, metavar="BITS", help=f"max_chunk_size, {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} (default {CPU_MAX_CHUNK_SIZE}): the encoder's time per step grows as 2^BITS, the bits spent above the KL shrink")


def _diffc_kwargs(args: argparse.Namespace, codec, decode_kw: dict[str, Any]) -> dict[str, Any]:
    """--diffc, --bpp, --diffc-step, --diffc-chunk, checked once before any image (the codec's
    diffc_options); an error for CoD-Lite."""
    kw = {k: v for k, v in dict(bpp=args.bpp, diffc_step=args.diffc_step, diffc_chunk=args.diffc_chunk).items() if v is not None}
    if not (args.diffc or kw):
        return {}
    flags = ", ".join(f"--{k.replace('_', '-')}" for k in (["diffc"] if args.diffc else []) + list(kw))
    if not getattr(codec, "diffc_capable", False):
        raise UsageError(f"{flags}: {codec.name} decodes in one step; DiffC runs on the CoD models (cod-pixel, cod-latent)")
    if not args.diffc:
        raise UsageError(f"{flags}: apply to DiffC; add --diffc")
    kw["diffc"] = True
    codec.diffc_options(**kw, **decode_kw, format=getattr(args, "format", "cod"))
    return kw


def _load_codec(args: argparse.Namespace, **kw: Any):
    import cod

    return cod.load(args.model, weights=args.weights, device=args.device, config_yaml=args.config, vae=args.vae, progress=True, unsafe_pickle=args.unsafe_pickle, **limit_kwargs(args), **_precision_kwargs(args), **kw)


def _precision_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """--precision as a cod.load keyword (None: the codec's default)."""
    return {"precision": args.precision}


def _naming(path: Path, exc: BaseException) -> str:
    """The error message of one file of a batch, starting with the file's name."""
    msg = str(exc) if isinstance(exc, CodError) else f"{type(exc).__name__}: {exc}"
    return msg if msg.startswith(str(path)) else f"{path}: {msg}"


@dataclass
class Batch:
    """How a batch went: files done and failed, inputs skipped, pixels and seconds."""

    desc: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    skipped_what: str = ""
    pixels: int = 0  # pixels the per-file function reported (decoded or encoded)
    seconds: float = 0.0  # the codec's time for them

    def summary(self) -> str:
        line = f"{self.desc}: {self.ok} ok, {self.failed} failed"
        if self.skipped:
            line += f", {self.skipped} skipped ({self.skipped_what}; --verbose names them)"
        if self.pixels:
            line += f"; {self.pixels / 1e6:.2f} Mpx in {self.seconds:.1f} s, {self.seconds / (self.pixels / 1e6):.2f} s/Mpx"
        return line


def _note(msg: str) -> None:
    """One status line on stderr, without breaking an active progress bar."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def _run_pairs(pairs: list[tuple[Path, Path]], desc: str, fn: Callable[[Path, Path], tuple[int, float] | None], args: argparse.Namespace | None = None,
               skipped: list[Path] | None = None, skipped_what: str = "") -> int:
    """Apply fn(input, output) to every pair (it may return (pixels, seconds), for the time per
    megapixel); report each failed file in one line naming it and go on (a read error or a full
    disk included); print a summary (``N ok, M failed``, the skipped inputs, s/Mpx) when the
    batch had more than one input (with --quiet: only if something failed). Exit code 1 if any
    failed; a usage error stops the command (exit code 2)."""
    skipped = skipped or []
    quiet, verbose = bool(getattr(args, "quiet", False)), bool(getattr(args, "verbose", False))
    batch = Batch(desc, skipped=len(skipped), skipped_what=skipped_what)
    if verbose:
        for f in skipped:
            _note(f"{f}: skipped ({skipped_what})")
    for src, dst in _progress(pairs, desc):
        try:
            done = fn(src, dst)
        except UsageError:
            raise
        except (CodError, OSError, MemoryError) as exc:  # one file's problem: report it, go on with the next
            batch.failed += 1
            _error(_naming(src, exc))
            continue
        batch.ok += 1
        if done:
            batch.pixels += done[0]
            batch.seconds += done[1]
    if len(pairs) + len(skipped) > 1 and not (quiet and not batch.failed):
        _note(batch.summary())
    return EXIT_RUNTIME if batch.failed else 0


def plan_outputs(
    files: list[Path],
    out: str | None,
    name_of: Callable[[Path], str],
    force: bool = False,
    folder_input: bool = False,
    original_of: Callable[[Path], Path | None] | None = None,
) -> list[tuple[Path, Path]]:
    """(input, output) pairs, checked before any work so that nothing is ever lost.

    Without ``-o`` each output is ``name_of(input)`` next to its input. ``-o`` is a folder when
    it is one, ends with /, or the inputs are several or a folder (then it must not be a file,
    and several files need it to exist or to end with /); else it is the one output file. No
    output may be an input, two outputs may not collide, ``original_of(input)`` (the photo a
    .cod file was made from) is never an output, and an existing output needs ``force``."""
    if out is None:
        pairs = [(f, f.with_name(name_of(f))) for f in files]
    else:
        o = Path(out)
        to_folder = o.is_dir() or out.endswith(("/", os.sep))
        if len(files) > 1 or folder_input:
            what = f"{len(files)} inputs" if len(files) > 1 else "a folder input"
            if o.exists() and not o.is_dir():
                raise UsageError(f"-o {out}: {what} need an output folder, and {out} is a file")
            if not (to_folder or folder_input):
                raise UsageError(f"-o {out}: {what} need an output folder: give an existing folder, or end the name with /")
            to_folder = True
        pairs = [(f, o / name_of(f) if to_folder else o) for f in files]
    inputs = {f.resolve() for f in files}
    written: dict[Path, Path] = {}
    for src, dst in pairs:
        key = dst.resolve()
        if key in inputs:
            raise UsageError(f"{dst} is an input; choose another -o")
        if key in written:
            raise UsageError(f"{written[key]} and {src} would both be written to {dst}; write them to separate folders")
        written[key] = src
        original = original_of(src) if original_of else None
        if original is not None and original.exists() and key == original.resolve():
            raise UsageError(f"{dst} is the original of {src}; a decode never replaces it: choose another -o")
    refuse_existing([dst for _, dst in pairs], force)
    return pairs


# ---------------------------------------------------------------- commands
def _input_images(args: argparse.Namespace):
    """The input images of compress and evaluate (files, and images in folders:
    cod.image_io.scan_inputs), or a clear error."""
    from cod.image_io import IMAGE_EXTENSIONS, scan_inputs

    inputs = scan_inputs(args.inputs, IMAGE_EXTENSIONS)
    if not inputs.files:
        raise CodError("no input images found" + (f" ({len(inputs.skipped)} other files)" if inputs.skipped else ""))
    return inputs


def _image_codec(args: argparse.Namespace):
    """The codec of compress and evaluate (--pad, --entropy, --chroma)."""
    return _load_codec(args, pad_mode=args.pad, entropy=getattr(args, "entropy", "on") == "on", chroma=getattr(args, "chroma", "on") == "on")


def cmd_compress(args: argparse.Namespace) -> int:
    from cod.image_io import atomic_write_bytes, read_image

    inputs = _input_images(args)
    folder_input = any(Path(i).is_dir() for i in args.inputs)
    pairs = plan_outputs(inputs.files, args.output, lambda f: f.name + ".cod", args.force, folder_input)
    codec = _image_codec(args)
    decode_kw = _decode_kwargs(args, codec)
    diffc_kw = _diffc_kwargs(args, codec, decode_kw)
    if args.format == "official":
        print("note: the official format stores no original size; the decoded image keeps the padding", file=sys.stderr)

    def one(src: Path, dst: Path) -> tuple[int, float]:
        image = read_image(src, max_pixels=codec.max_pixels)
        data = codec.compress(image, format=args.format, **decode_kw, **diffc_kw)
        atomic_write_bytes(dst, data, overwrite=args.force)
        if not args.quiet:
            h, w = image.shape[:2]
            d = codec.last_diffc if diffc_kw else None
            more = f"; DiffC {d.n_steps} steps (stops at tau {d.steps[-1].tau_next if d.steps else 1000}), {8 * len(d.payload)} payload bits" if d else ""
            print(f"{src} -> {dst}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp{more}")
        return image.shape[0] * image.shape[1], codec.last_timing.encode_s

    return _run_pairs(pairs, "compress", one, args, inputs.skipped, "not images")


def decoded_name(src: Path) -> str:
    """``photo.png.cod`` -> ``photo.decoded.png`` (``x.cod`` -> ``x.decoded.png``): a decoded
    image never takes its original's name, wherever it is written."""
    name = src.name[:-4] if src.name.lower().endswith(".cod") else src.name
    if not name.lower().endswith(IMAGE_OUT_EXTS):
        name += ".png"
    stem, _, ext = name.rpartition(".")
    return f"{stem}.decoded.{ext}"


def original_of(src: Path) -> Path | None:
    """The photo a .cod file was presumably made from: ``photo.png.cod`` -> ``photo.png`` beside it."""
    return src.with_name(src.name[:-4]) if src.name.lower().endswith(".cod") and len(src.name) > 4 else None


def cmd_decompress(args: argparse.Namespace) -> int:
    import numpy as np

    from cod.codec import resolve_device
    from cod.families import installed_codec_for, installed_weights
    from cod.image_io import not_a_file, scan_inputs, write_image

    limits = limit_kwargs(args)  # a bad value is one usage error before any file
    inputs = scan_inputs(args.inputs, (".cod",), recursive=False)
    expanded = inputs.files
    if not expanded:
        raise CodError("no .cod files found" + (f" ({len(inputs.skipped)} other files)" if inputs.skipped else ""))
    folder_input = any(Path(i).is_dir() for i in args.inputs)
    pairs = plan_outputs(expanded, args.output, decoded_name, args.force, folder_input, original_of)
    device = resolve_device(args.device)  # a usage error (no GPU) stops before any file
    # No --model/--weights: each .cod file names its model (family, rate, tag), so the
    # installed model that wrote it decodes it; the official format has no such fields.
    by_header = args.model is None and args.weights is None and args.format == "cod"
    if by_header and not installed_weights():
        _load_codec(args)  # raises the usual "no weights installed" error
    codec = None if by_header else _load_codec(args)
    decode_kw = _decode_kwargs(args, codec) if codec is not None else {}
    loaded: dict[str, Any] = {}

    def one(src: Path, dst: Path) -> tuple[int, float]:
        if not src.is_file():
            raise CodError(f"{src}: {not_a_file(src)}")
        data = src.read_bytes()
        c = codec if codec is not None else installed_codec_for(data, device=device, cache=loaded, **limits, **_precision_kwargs(args))
        img = c.decompress(data, format=args.format, **(decode_kw or _decode_kwargs(args, c)))
        write_image(dst, np.asarray(img), overwrite=args.force)
        w, h = img.size
        seconds = c.last_timing.decode_s
        if not args.quiet:
            print(f"{src} -> {dst}: {w}x{h}, {seconds:.2f} s ({seconds / (w * h / 1e6):.2f} s/Mpx)")
        return w * h, seconds

    return _run_pairs(pairs, "decompress", one, args, inputs.skipped, "not .cod files")


def cmd_info(args: argparse.Namespace) -> int:
    from cod import bitstream as bs
    from cod.zoo import pad_multiple, rate_label

    status = 0
    for name in args.inputs:
        path = Path(name)
        try:
            if not path.is_file():
                raise CodError(f"{path}: no such file")
            f = bs.read_cod(path.read_bytes())
        except CodError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_RUNTIME
            continue
        h = f.header
        info = {
            "file": str(path),
            "format_version": h.version,
            "family": h.family_name,
            "ds": h.ds,
            "codebook_bits": h.bits,
            "rate": rate_label(h.ds, h.bits),
            "model_tag": f"{h.model_tag:04x}",
            "height": h.height,
            "width": h.width,
            "payload_bytes": len(f.payload),
            "file_bytes": f.size,
            "bpp": round(f.bpp, 6),
            "crc": "ok",
        }
        grid = bs.grid_size(h.height, h.width, h.ds, pad_multiple(h.ds))
        info["index_grid"] = list(grid)
        n_idx = grid[0] * grid[1]
        if h.coding:  # .cod v2: what the range coder paid, against the fixed-length v1 file
            fixed = f.size - len(f.payload) - (3 if h.version == bs.VERSION_ENTROPY else 0) + bs.packed_size(n_idx, h.bits)
            info.update(index_coding=bs.CODING_NAMES.get(h.coding, str(h.coding)), prior_tag=f"{h.prior_tag:04x}",
                        bits_per_index=round(8 * len(f.payload) / n_idx, 4), saving=f"{100 * (1 - f.size / fixed):.1f}% against fixed-length indices ({fixed} bytes with them)")
        else:
            info.update(index_coding="fixed-length", bits_per_index=h.bits)
        if f.diffc is not None:  # .cod v3: the coded chain after the indices
            from cod.diffc.payload import DiffCPayload

            info.update(payload_bytes=len(f.payload) + len(f.diffc), index_bytes=len(f.payload), diffc_bytes=len(f.diffc), diffc_bits=8 * len(f.diffc))
            try:
                info.update(DiffCPayload.from_bytes(f.diffc).describe())
            except CodError as exc:
                info["diffc"] = f"unreadable ({exc})"
        if f.chroma is not None:  # .cod v4: chroma side information after the indices (cod.chroma)
            info.update(payload_bytes=len(f.payload) + len(f.chroma), index_bytes=len(f.payload), chroma_bytes=len(f.chroma))
            if len(f.chroma) >= 2:
                info.update(chroma_block=f.chroma[0], chroma_step=f.chroma[1])
        if h.settings:  # family-specific: read through the registry (which imports torch)
            from cod.families import family_of_code

            fam = family_of_code(h.family)
            try:
                info.update(fam.codec.describe_settings(h.settings) if fam is not None else {"settings": h.settings.hex()})
            except CodError as exc:
                info["settings"] = f"unreadable ({exc})"
        if args.json:
            print(json.dumps(info))
        else:
            for k, v in info.items():
                print(f"{k:>15}: {v}")
    return status


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from cod.eval.metrics import ms_ssim, psnr
    from cod.image_io import atomic_write_bytes, read_image

    inputs = _input_images(args)
    files = inputs.files
    if args.json:
        refuse_existing([args.json], args.force)
    codec = _image_codec(args)
    diffc_kw = _diffc_kwargs(args, codec, {})
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cod-eval-") as tmp:

        def one(src: Path, cod_path: Path) -> None:
            ref = read_image(src, max_pixels=codec.max_pixels)
            t0 = time.perf_counter()
            data = codec.compress(ref, **diffc_kw)
            t_enc = time.perf_counter() - t0
            atomic_write_bytes(cod_path, data)
            t0 = time.perf_counter()
            rec = np.asarray(codec.decompress(cod_path.read_bytes()))
            t_dec = time.perf_counter() - t0
            h, w = ref.shape[:2]
            size = cod_path.stat().st_size
            rows.append({"image": str(src), "height": h, "width": w, "bytes": size, "bpp": 8 * size / (h * w), "psnr": psnr(ref, rec), "ms_ssim": ms_ssim(ref, rec), "encode_s": t_enc, "decode_s": t_dec})

        failed = _run_pairs([(f, Path(tmp) / f"{i}.cod") for i, f in enumerate(files)], "evaluate", one, args, inputs.skipped, "not images")
    if not rows:
        return EXIT_RUNTIME
    keys = ["bpp", "psnr", "ms_ssim", "encode_s", "decode_s"]
    mean = {k: _nanmean([r[k] for r in rows]) for k in keys}
    print(f"{'image':<32} {'bpp':>8} {'PSNR':>7} {'MS-SSIM':>8} {'enc s':>7} {'dec s':>7}")
    for r in rows + [dict(mean, image="mean")]:
        print(f"{Path(r['image']).name[:32]:<32} {r['bpp']:8.4f} {_fmt(r['psnr'], 7, 2)} {_fmt(r['ms_ssim'], 8, 4)} {r['encode_s']:7.3f} {r['decode_s']:7.3f}")
    result = {"model": codec.name, "device": str(codec.device), "mean": mean, "images": rows}
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=1) + "\n").encode(), overwrite=args.force)
        print(f"results written to {args.json}")
    return failed


def _nanmean(vals: list) -> float | None:
    good = [v for v in vals if v is not None and v == v]
    return sum(good) / len(good) if good else None


def _fmt(v: float | None, width: int, prec: int) -> str:
    return f"{v:{width}.{prec}f}" if v is not None else f"{'n/a':>{width}}"


def cmd_convert(args: argparse.Namespace) -> int:
    from cod.checkpoint import check_state_dict, save_weights
    from cod.families import build_network, official_family

    refuse_existing([args.output], args.force)
    fam = official_family(args.config_yaml)
    kw = {"prefix": args.prefix} if args.prefix else {}  # else the family's default prefix
    config, state, ignored = fam.official.convert(args.checkpoint, args.config_yaml, unsafe_pickle=args.unsafe_pickle, name=args.name, **kw)
    model = build_network(config, meta=True, where=args.config_yaml)  # shapes only
    if args.strict:
        check_state_dict(model, state)
    else:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in state]
        if missing:
            raise CodError(f"--no-strict: {len(missing)} tensors of the model are not in the checkpoint (first: {missing[0]!r}); nothing to initialise them from")
    save_weights(args.output, state, config)
    n = sum(v.numel() for v in state.values())
    print(f"{args.checkpoint} -> {args.output}: {config['name']} ({fam.name}, ds={config['ds']}, {config['codebook_bits']}-bit), {len(state)} tensors, {n / 1e6:.2f} M parameters")
    if ignored:
        print(f"ignored checkpoint entries: {', '.join(ignored)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cod.families import check_config, installed_weights
    from cod.zoo import DEFAULT_MODEL, MODELS, nominal_bpp

    inst = installed_weights()
    print(f"{'model':<22} {'ds':>3} {'bits':>4} {'nominal bpp':>11}  weights")
    default = DEFAULT_MODEL if DEFAULT_MODEL in inst else (sorted(inst)[0] if inst else None)
    for name, cfg in MODELS.items():
        w = str(inst[name]) if name in inst else "not installed (use --weights)"
        w += " (default)" if name == default else ""
        typed = check_config(cfg, name)
        stride = typed.index_stride
        print(f"{name:<22} {stride:>3} {typed.codebook_bits:>4} {nominal_bpp(stride, typed.codebook_bits):>11.5f}  {w}")
    for name in sorted(set(inst) - set(MODELS)):
        print(f"{name:<22} {'':>3} {'':>4} {'':>11}  {inst[name]}")
    return 0


def cmd_fit_prior(args: argparse.Namespace) -> int:
    from cod.priors import fit_model_prior

    out = Path(args.output)
    if args.groups < 1 or args.max_side < 16:
        raise UsageError("--groups must be >= 1 and --max-side >= 16")
    refuse_existing([out], args.force)
    r = fit_model_prior(args.weights, args.data, out, groups=args.groups, max_side=args.max_side, device=args.device,
                        config_yaml=args.config, unsafe_pickle=args.unsafe_pickle, progress=lambda files: _progress(list(files), "fit-prior"))
    held = r.get("held_out_bits_per_index", {}).get(str(r["alpha"]))
    held_s = f"; held-out images: {held:.3f} bits/index with the context model, {r['held_out_static_bits_per_index']:.3f} static" if held else ""
    print(f"{out}: prior {r['prior_tag']} fitted on {r['images']} images ({r['indices']} indices, {r['codes_seen']}/{2 ** r['bits']} codes seen){held_s}; "
          f"fixed length is {r['bits']} bits; {r['seconds']:.0f} s")
    return 0


# ------------------------------------------------------------------ parser
EPILOG = """exit codes: 0 success; 1 runtime error (an input missing, unreadable or corrupt, weights
that do not fit, a missing package); 2 usage error (bad arguments, an unknown model, an output
that exists without --force, --device cuda without a GPU); 3 internal error (a bug: rerun with
COD_DEBUG=1 for the traceback); 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    from cod.zoo import FORMATS, PAD_MODES

    parser = argparse.ArgumentParser(
        prog="cod",
        description=f"Diffusion-based generative image compression, {FAMILIES_HELP}",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="images -> .cod files")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--output", default=None, help="output folder (or file, for one input); default: NAME.cod next to the input")
    _add_model_args(p)
    p.add_argument("--format", default="cod", choices=FORMATS, help="container: ours or the original code's 4-byte header (fixed-length indices)")
    p.add_argument("--entropy", default="on", choices=["on", "off"], help="on: range-code the indices under the weights' prior (.cod v2, and inside DiffC files) when they carry one (`cod fit-prior`); off: fixed-length indices (.cod v1)")
    p.add_argument("--chroma", default="on", choices=["on", "off"], help="on: CoD-Lite models with a chroma block in their config (the shipped small ones) also store the image's coarse colour, ~5%% of the file (.cod v4, docs/format.md); off: indices only")
    p.add_argument("--pad", default="replicate", choices=PAD_MODES, help="padding to the model multiple")
    add_limit_args(p)
    add_force_arg(p)
    _add_batch_args(p)
    _add_decode_args(p, "stored in the file")
    _add_diffc_args(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help=".cod files -> images")
    p.add_argument("inputs", nargs="+", help=".cod files or folders")
    p.add_argument("-o", "--output", default=None, help="output folder (or file, for one input); default: next to the input. Images are named NAME.decoded.png (never the original's name)")
    _add_model_args(p)
    p.add_argument("--format", default="cod", choices=FORMATS, help="container: ours (v1) or the original code's 4-byte header")
    add_limit_args(p)
    add_force_arg(p)
    _add_batch_args(p)
    _add_decode_args(p, "override the file's settings")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("evaluate", help="round trip through real files: bpp, PSNR, MS-SSIM, timings")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    _add_model_args(p)
    p.add_argument("--pad", default="replicate", choices=PAD_MODES)
    p.add_argument("--entropy", default="on", choices=["on", "off"], help="as for compress")
    p.add_argument("--chroma", default="on", choices=["on", "off"], help="as for compress")
    p.add_argument("--json", default=None, help="write results to this JSON file")
    add_force_arg(p, "--json file")
    add_limit_args(p)
    _add_batch_args(p, quiet=False)
    _add_diffc_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="describe .cod files (reads the header only)")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="official .pt + .yaml (CoD-Lite or CoD) -> our .safetensors")
    p.add_argument("checkpoint")
    p.add_argument("config_yaml")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--prefix", default=None, help="state-dict prefix of the network (default: CoD-Lite net., then ema_denoiser., then none; CoD ema_denoiser.)")
    p.add_argument("--name", default=None, help="model name to record (default: <family>-<rate>)")
    add_unsafe_pickle_arg(p)
    p.add_argument("--no-strict", dest="strict", action="store_false", help="drop checkpoint tensors the model does not have (unknown keys, other shapes); every tensor of the model must still be there")
    add_force_arg(p, "output file")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("fit-prior", help="fit the index prior of a model on training images (entropy coding, .cod v2)")
    p.add_argument("data", nargs="+", help="training image folders or files (never the evaluation set)")
    p.add_argument("--weights", "-w", required=True, help="the model: our .safetensors or an official .pt (+ .yaml)")
    p.add_argument("--config", default=None, help="official .yaml for an official .pt (default: next to it)")
    p.add_argument("-o", "--output", required=True, help="weights file to write: the model plus its prior")
    p.add_argument("--groups", type=int, default=16, help="codebook classes of the context model (default 16)")
    p.add_argument("--max-side", type=int, default=2048, help="downscale larger images to this side first (default 2048)")
    add_force_arg(p, "output file")
    add_unsafe_pickle_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_fit_prior)

    p = sub.add_parser("models", help="list the models of every family and the installed weights")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train one stage from a YAML config (cod/train/configs)")
    p.add_argument("config", help="config file or shipped name (e.g. tiny-pretrain, codlite-pretrain-stage1)")
    p.add_argument("--data", action="append", default=[], metavar="DIR", help="training photos: a folder (searched recursively), a file list or an image; repeat for more (sets data.sources)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (dotted key, YAML value)")
    p.add_argument("-o", "--output", default=None, help="output folder (default: the config's); an unfinished run there is resumed")
    add_force_arg(p, "finished run in the output folder")
    p.set_defaults(func=lambda a: __import__("cod.train.run", fromlist=["main"]).main(a))

    from cod.eval.cli import add_eval_subcommands

    add_eval_subcommands(sub)  # bench, plot, bdrate, speed
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits 2 here (argparse)
    old_format = warnings.formatwarning
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CodError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as exc:
        print(f"error: missing optional dependency {exc.name or exc}; install it with: pip install 'cod[eval]'", file=sys.stderr)
        return EXIT_RUNTIME
    except BrokenPipeError:  # `cod models | head`: the reader left; say nothing (Python docs, "Note on SIGPIPE")
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RUNTIME
    except (OSError, MemoryError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("COD_DEBUG"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); rerun with COD_DEBUG=1 for a traceback", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        warnings.formatwarning = old_format


if __name__ == "__main__":
    sys.exit(main())
