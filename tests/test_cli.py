"""The `cod` command end to end: outputs, errors, corruption suite."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from cod.cli import main
from tests.test_codec import smooth_image


@pytest.fixture()
def photo(tmp_path):
    p = tmp_path / "in" / "photo.png"
    p.parent.mkdir()
    Image.fromarray(smooth_image(70, 90)).save(p)
    return p


def run_cli(*args):
    """Run `python -m cod` in a fresh process: (exit code, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "cod", *map(str, args)], capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


def test_compress_decompress_roundtrip(photo, tiny_weights, tmp_path, capsys):
    w = tiny_weights["0.0312"]
    assert main(["compress", str(photo), "--weights", str(w)]) == 0
    cod_file = photo.with_name("photo.png.cod")
    assert cod_file.is_file()
    out = capsys.readouterr().out
    assert f"{cod_file.stat().st_size} bytes" in out and "bpp" in out
    assert main(["decompress", str(cod_file), "--weights", str(w)]) == 0
    dec = photo.with_name("photo.decoded.png")  # the original is never overwritten
    assert Image.open(dec).size == (90, 70)
    # into a folder
    outdir = tmp_path / "out"
    assert main(["decompress", str(cod_file), "--weights", str(w), "-o", str(outdir) + "/"]) == 0
    assert Image.open(outdir / "photo.decoded.png").size == (90, 70)  # never the original's name
    # info
    assert main(["info", str(cod_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["height"] == 70 and info["width"] == 90 and info["ds"] == 16 and info["crc"] == "ok"
    assert info["bpp"] == pytest.approx(8 * cod_file.stat().st_size / (70 * 90), abs=1e-6)


def test_folder_and_progress(tmp_path, tiny_weights):
    src = tmp_path / "imgs"
    (src / "sub").mkdir(parents=True)
    for i, (h, w) in enumerate([(20, 30), (33, 17), (64, 64)]):
        Image.fromarray(smooth_image(h, w, i)).save(src / ("sub" if i == 2 else ".") / f"im{i}.png")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "codes"
    assert main(["compress", str(src), "-o", str(out), "--weights", str(tiny_weights["0.5"]), "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["im0.png.cod", "im1.png.cod", "im2.png.cod"]
    rec = tmp_path / "rec"
    assert main(["decompress", str(out), "-o", str(rec), "--weights", str(tiny_weights["0.5"]), "-q"]) == 0
    assert Image.open(rec / "im1.decoded.png").size == (17, 33)


def test_official_format_cli(photo, tiny_weights, tmp_path):
    w = str(tiny_weights["0.0156"])
    out = tmp_path / "o.cod"
    assert main(["compress", str(photo), "-o", str(out), "--weights", w, "--format", "official"]) == 0
    assert out.read_bytes()[:4] == (96).to_bytes(2, "little") + (80).to_bytes(2, "little")  # padded 70x90 -> 80x96
    assert main(["decompress", str(out), "-o", str(tmp_path / "o.png"), "--weights", w]) != 0  # not guessed
    assert main(["decompress", str(out), "-o", str(tmp_path / "o.png"), "--weights", w, "--format", "official"]) == 0
    assert Image.open(tmp_path / "o.png").size == (96, 80)


def test_evaluate_writes_json(photo, tiny_weights, tmp_path, capsys):
    big = photo.parent / "big.png"
    Image.fromarray(smooth_image(176, 192)).save(big)
    js = tmp_path / "r.json"
    assert main(["evaluate", str(photo.parent), "--weights", str(tiny_weights["0.125"]), "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert [r["image"].split("/")[-1] for r in res["images"]] == ["big.png", "photo.png"]
    for r in res["images"]:
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / (r["height"] * r["width"]))
        assert 0 < r["psnr"] < 60 and r["encode_s"] > 0 and r["decode_s"] > 0
    assert res["images"][0]["ms_ssim"] is not None and res["images"][1]["ms_ssim"] is None  # 70 px: too small
    table = capsys.readouterr().out
    assert "mean" in table and "PSNR" in table


def test_missing_weights_is_a_clean_error(photo):
    code, out, err = run_cli("compress", photo, "--model", "codlite-0.0312")
    assert code != 0
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: no weights installed for codlite-0.0312")
    assert "Traceback" not in err
    assert not photo.with_name("photo.png.cod").exists()


def test_bad_image_inputs(tmp_path, tiny_weights, capsys):
    w = str(tiny_weights["0.0312"])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for f in (bad, empty, tmp_path / "missing.png"):
        assert main(["compress", str(f), "--weights", w]) != 0
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert not list(tmp_path.glob("*.cod"))


def test_huge_image_refused(tmp_path, tiny_weights, capsys):
    Image.fromarray(smooth_image(64, 64)).save(tmp_path / "big.png")
    assert main(["compress", str(tmp_path / "big.png"), "--weights", str(tiny_weights["0.0312"]), "--max-pixels", "1000"]) != 0
    assert "image is 64x64 (4096 pixels), above the limit of 1000 pixels (--max-pixels" in capsys.readouterr().err
    assert not (tmp_path / "big.png.cod").exists()
    # and above Pillow's own limit when asked: Pillow's check moves with --max-pixels
    assert main(["compress", str(tmp_path / "big.png"), "--weights", str(tiny_weights["0.0312"]), "--max-pixels", "none", "-q"]) == 0


def _corrupt_variants(data):
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        yield f"flip{i:05d}", bytes(bad)
    for n in range(len(data)):
        yield f"trunc{n:05d}", data[:n]


def test_corruption_suite_cli(tmp_path, tiny_weights):
    """Every single-bit flip and every truncation of a sample file: one clean error line
    per file, non-zero exit, no traceback, and no output file."""
    w = tiny_weights["0.0039"]
    img = tmp_path / "s.png"
    Image.fromarray(smooth_image(40, 64)).save(img)
    assert main(["compress", str(img), "--weights", str(w), "-q"]) == 0
    data = (tmp_path / "s.png.cod").read_bytes()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    variants = dict(_corrupt_variants(data))
    for name, blob in variants.items():
        (bad_dir / f"{name}.cod").write_bytes(blob)
    out = tmp_path / "decoded"
    code, stdout, stderr = run_cli("decompress", bad_dir, "-o", out, "--weights", w, "-q")
    assert code != 0
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == len(variants), [ln for ln in lines if not ln.startswith("error: ")][:5]
    assert not out.exists() or not any(out.iterdir())
    # one file alone: the exit code is non-zero too
    code, _, stderr = run_cli("decompress", bad_dir / "flip00100.cod", "--weights", w)
    assert code != 0 and stderr.startswith("error: ") and "Traceback" not in stderr
    assert not (bad_dir / "flip00100.decoded.png").exists()


def test_convert_errors_name_the_key(tmp_path, capsys):
    import torch
    import yaml

    from tests.conformance import load_manifest, official_state_dict
    from tests.conftest import conformance_case

    man = load_manifest(conformance_case("A4_codlite_0.0312"))
    sd = {f"net.{k}": v for k, v in official_state_dict(man).items()}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"net": {"init_args": man["constructor_args"]}}}))

    def convert(state):
        torch.save(state, tmp_path / "c.pt")
        rc = main(["convert", str(tmp_path / "c.pt"), str(cfg), "-o", str(tmp_path / "c.safetensors")])
        return rc, capsys.readouterr().err

    missing = dict(sd)
    del missing["net.blocks.1.conv4.weight"]
    rc, err = convert(missing)
    assert rc == 1 and "missing key" in err and "blocks.1.conv4.weight" in err
    extra = dict(sd, **{"net.blocks.9.conv4.weight": torch.zeros(1)})
    rc, err = convert(extra)
    assert rc == 1 and "unexpected key" in err and "blocks.9.conv4.weight" in err
    shape = dict(sd, **{"net.final_layer.linear.bias": torch.zeros(4)})
    rc, err = convert(shape)
    assert rc == 1 and "shape mismatch" in err and "final_layer.linear.bias" in err
    folded = {k.replace("net.blocks.0.", "net.blocks.0.block."): v for k, v in sd.items()}
    rc, err = convert(folded)
    assert rc == 1 and "folded eval form" in err
    assert not (tmp_path / "c.safetensors").exists()
    rc, _ = convert(sd)
    assert rc == 0 and (tmp_path / "c.safetensors").exists()


def test_models_lists_rates(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("codlite-0.0039", "codlite-0.0312", "codlite-0.5"):
        assert name in out


def test_outputs_have_normal_permissions(photo, tiny_weights):
    import os
    import stat

    assert main(["compress", str(photo), "--weights", str(tiny_weights["0.0312"]), "-q"]) == 0
    mode = stat.S_IMODE(os.stat(photo.with_name("photo.png.cod")).st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_installed_models_are_picked_by_default_and_by_header(photo, tiny_weights, tmp_path, monkeypatch, capsys):
    """No --model/--weights: compress uses the default model; decompress finds the installed
    model that wrote each file from its header (rate and model tag), whatever the default."""
    import shutil

    import cod.families
    from cod.zoo import DEFAULT_MODEL

    inst = tmp_path / "weights"
    inst.mkdir()
    shutil.copy(tiny_weights["0.0312"], inst / f"{DEFAULT_MODEL}.safetensors")
    shutil.copy(tiny_weights["0.125"], inst / "codlite-small-0.125.safetensors")
    monkeypatch.setattr(cod.families, "WEIGHTS_DIR", inst)
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert f"{DEFAULT_MODEL}" in listing and "(default)" in listing and str(inst / "codlite-small-0.125.safetensors") in listing

    assert main(["compress", str(photo), "-o", str(tmp_path / "a.cod"), "-q"]) == 0
    assert main(["compress", str(photo), "-o", str(tmp_path / "b.cod"), "--model", "codlite-small-0.125", "-q"]) == 0
    assert main(["info", str(tmp_path / "a.cod"), str(tmp_path / "b.cod"), "--json"]) == 0
    infos = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [i["ds"] for i in infos] == [16, 8]
    assert main(["decompress", str(tmp_path / "a.cod"), str(tmp_path / "b.cod"), "-o", str(tmp_path / "dec") + "/", "-q"]) == 0
    for name, rate in (("a", "0.0312"), ("b", "0.125")):
        explicit = tmp_path / f"{name}.explicit.png"
        assert main(["decompress", str(tmp_path / f"{name}.cod"), "-o", str(explicit), "--weights", str(tiny_weights[rate]), "-q"]) == 0
        assert Image.open(tmp_path / "dec" / f"{name}.decoded.png").tobytes() == Image.open(explicit).tobytes()

    # a file from weights that are not installed: one clear line, no output
    other = tmp_path / "other.cod"
    assert main(["compress", str(photo), "-o", str(other), "--weights", str(tiny_weights["0.5"]), "-q"]) == 0
    capsys.readouterr()
    assert main(["decompress", str(other), "-o", str(tmp_path / "other.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {other}: no installed model wrote this file") and "--weights" in err
    assert not (tmp_path / "other.png").exists()


def test_closed_pipe_is_quiet():
    """`cod models | head -1`: the reader leaves early; no error line, no traceback."""
    p = subprocess.Popen([sys.executable, "-m", "cod", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # closed before the interpreter has started: every write hits EPIPE
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert err == "", err
    assert p.returncode == 1


# ------------------------------------------------------------------ no silent overwrite
def test_the_original_photo_is_byte_identical_after_compress_and_decompress_into_its_own_folder(tmp_path, tiny_weights):
    """`cod decompress kodim04.jpg.cod -o photos/` once replaced kodim04.jpg with the lossy
    decode: a decoded image never takes the original's name, and -o naming it is refused."""
    w = str(tiny_weights["0.0312"])
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(smooth_image(64, 80)).save(photos / "kodim04.jpg", quality=90)
    Image.fromarray(smooth_image(48, 64, 1)).save(photos / "parrots.png")
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    assert main(["compress", str(photos), "-o", str(photos), "--weights", w, "-q"]) == 0
    assert main(["decompress", str(photos / "kodim04.jpg.cod"), "-o", str(photos), "--weights", w, "-q"]) == 0
    assert main(["decompress", str(photos), "-o", str(photos) + "/", "--weights", w, "-q", "--force"]) == 0  # even with --force
    assert {p.name: p.read_bytes() for p in photos.iterdir() if p.name in before} == before
    assert sorted(p.name for p in photos.iterdir()) == sorted([*before, "kodim04.jpg.cod", "parrots.png.cod", "kodim04.decoded.jpg", "parrots.decoded.png"])
    for args in ([], ["--force"]):  # naming the original explicitly: refused, with or without --force
        assert main(["decompress", str(photos / "kodim04.jpg.cod"), "-o", str(photos / "kodim04.jpg"), "--weights", w, *args]) == 2
    assert (photos / "kodim04.jpg").read_bytes() == before["kodim04.jpg"]


def test_an_existing_output_is_refused_unless_force(photo, tiny_weights, tmp_path, capsys):
    w = str(tiny_weights["0.0312"])
    cod_file = photo.with_name("photo.png.cod")
    assert main(["compress", str(photo), "--weights", w, "-q"]) == 0
    data = cod_file.read_bytes()
    cod_file.write_bytes(b"precious")
    capsys.readouterr()
    assert main(["compress", str(photo), "--weights", w]) == 2
    assert capsys.readouterr().err.strip() == f"error: {cod_file} exists; pass --force to replace it"
    assert cod_file.read_bytes() == b"precious"
    assert main(["compress", str(photo), "--weights", w, "--force", "-q"]) == 0 and cod_file.read_bytes() == data
    # -o an existing file of any kind
    txt = tmp_path / "existing.txt"
    txt.write_text("notes")
    assert main(["compress", str(photo), "-o", str(txt), "--weights", w]) == 2
    assert main(["decompress", str(cod_file), "-o", str(txt), "--weights", w]) == 2
    assert txt.read_text() == "notes" and "existing.txt exists" in capsys.readouterr().err
    # the default decoded name exists
    decoded = photo.with_name("photo.decoded.png")
    decoded.write_bytes(b"mine")
    assert main(["decompress", str(cod_file), "--weights", w]) == 2 and decoded.read_bytes() == b"mine"
    assert main(["decompress", str(cod_file), "--weights", w, "-f", "-q"]) == 0 and Image.open(decoded).size == (90, 70)
    # an output that is an input: refused even with --force
    assert main(["compress", str(photo), "-o", str(photo), "--weights", w, "--force"]) == 2
    assert Image.open(photo).size == (90, 70)


def test_several_inputs_need_an_output_folder(tmp_path, tiny_weights, capsys):
    w = str(tiny_weights["0.0312"])
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(smooth_image(32, 32)).save(a)
    Image.fromarray(smooth_image(32, 48, 1)).save(b)
    assert main(["compress", str(a), str(b), "-o", str(tmp_path / "one.cod"), "--weights", w]) == 2
    assert "need an output folder" in capsys.readouterr().err
    assert not (tmp_path / "one.cod").exists()  # no folder named one.cod either
    (tmp_path / "file.cod").write_bytes(b"x")
    assert main(["compress", str(a), str(b), "-o", str(tmp_path / "file.cod"), "--weights", w, "--force"]) == 2
    assert (tmp_path / "file.cod").read_bytes() == b"x"
    assert main(["compress", str(a), str(b), "-o", str(tmp_path / "codes") + "/", "--weights", w, "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "codes").iterdir()) == ["a.png.cod", "b.png.cod"]
    # two inputs that would be written to one name: refused before any work
    (tmp_path / "sub").mkdir()
    Image.fromarray(smooth_image(32, 32, 2)).save(tmp_path / "sub" / "a.png")
    capsys.readouterr()
    assert main(["compress", str(a), str(tmp_path / "sub" / "a.png"), "-o", str(tmp_path / "flat") + "/", "--weights", w]) == 2
    assert "would both be written to" in capsys.readouterr().err and not (tmp_path / "flat").exists()
    # a batch with one existing output is refused as a whole: nothing is written
    (tmp_path / "codes" / "b.png.cod").write_bytes(b"keep")
    (tmp_path / "codes" / "a.png.cod").unlink()
    assert main(["compress", str(a), str(b), "-o", str(tmp_path / "codes"), "--weights", w]) == 2
    assert not (tmp_path / "codes" / "a.png.cod").exists() and (tmp_path / "codes" / "b.png.cod").read_bytes() == b"keep"


def test_every_writing_command_refuses_an_existing_file(photo, tiny_weights, tmp_path, capsys):
    """evaluate --json, convert -o, plot -o, speed --json: refused before any work, kept as they were."""
    existing = tmp_path / "keep.json"
    existing.write_text("{}")
    w = str(tiny_weights["0.0312"])
    for argv in (
        ["evaluate", str(photo), "--weights", w, "--json", str(existing)],
        ["convert", "missing.pt", "missing.yaml", "-o", str(existing)],
        ["plot", "missing.json", "-o", str(existing)],
        ["speed", "--model", "jpeg", "--size", "32x32", "--json", str(existing)],
    ):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.strip() == f"error: {existing} exists; pass --force to replace it"
        assert existing.read_text() == "{}"


def test_the_atomic_writer_never_replaces_a_file_created_meanwhile(tmp_path):
    from cod.errors import UsageError
    from cod.image_io import atomic_output, atomic_write_bytes

    target = tmp_path / "out.bin"
    with pytest.raises(UsageError, match="exists"):
        with atomic_output(target, overwrite=False) as tmp:
            tmp.write_bytes(b"new")
            target.write_bytes(b"someone else's")  # appears while we write
    assert target.read_bytes() == b"someone else's" and list(tmp_path.iterdir()) == [target]  # no .part left
    atomic_write_bytes(tmp_path / "fresh.bin", b"ok", overwrite=False)
    assert (tmp_path / "fresh.bin").read_bytes() == b"ok"


# ------------------------------------------------------------------ exit codes, names, help
def test_exit_codes_are_2_for_usage_and_1_for_runtime(photo, tiny_weights, tmp_path, monkeypatch, capsys):
    import torch

    w = str(tiny_weights["0.0312"])
    assert main(["compress", str(photo), "--weights", w, "-q"]) == 0
    cod_file = photo.with_name("photo.png.cod")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    usage = [
        ["compress", str(photo), "--model", "codlite-9"],
        ["decompress", str(cod_file), "--model", "codlite-9"],
        ["compress", str(photo), "--weights", w, "--device", "cuda", "-o", str(tmp_path / "x.cod")],
        ["decompress", str(cod_file), "--weights", w, "--device", "cuda"],
        ["decompress", str(cod_file), "--device", "cuda"],  # the installed model path, too
        ["compress", str(photo), "--weights", w, "--steps", "4", "-o", str(tmp_path / "y.cod")],
        ["speed", "--model", "codlite-9"],
        ["bench", str(photo.parent), "--codec", "codlite-9"],
        ["bdrate", "a.json", "b.json", "--metric", "sharpness"],
        ["train", "no-such-config"],
    ]
    for argv in usage:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (argv, err)
    assert "no CUDA GPU" in (lambda: (main(usage[2]), capsys.readouterr().err)[1])()
    bad = tmp_path / "bad.cod"
    bad.write_bytes(cod_file.read_bytes()[:-3])
    runtime = [
        ["decompress", str(bad), "--weights", w],
        ["decompress", str(tmp_path / "missing.cod"), "--weights", w],
        ["compress", str(tmp_path / "missing.png"), "--weights", w],
        ["info", str(bad)],
        ["compress", str(photo), "--weights", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "z.cod")],
        ["bdrate", str(tmp_path / "missing.json"), str(tmp_path / "missing.json")],
    ]
    for argv in runtime:
        assert main(argv) == 1, argv
        assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit) as exc:  # argparse's own usage errors
        main(["compress"])
    assert exc.value.code == 2


def test_an_unknown_model_names_the_known_ones(photo):
    code, _, err = run_cli("compress", photo, "--model", "codlite-9")
    assert code == 2
    assert err.startswith("error: unknown model codlite-9; known: codlite-0.0039, ") and "cod-pixel-0.0039" in err and "codlite-small-0.0312" in err
    assert "no weights installed" not in err and "Traceback" not in err


def test_help_names_both_families(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "CoD-Lite" in out and "CoD " in out and "cod-pixel" in out and "cod-latent" in out
    assert "exit codes" in out and "2 usage error" in out and "1 runtime error" in out


def test_a_codec_prints_as_one_short_line(tiny_weights):
    import cod
    from tests.test_cod_codec import tiny_cod_config, randomise
    from cod.cod_codec import CoDCodec
    from cod.families import build_network

    lite = cod.load(weights=tiny_weights["0.0312"])
    assert repr(lite) == str(lite) == "CoDLiteCodec(name='tiny-codlite-0.0312', family='codlite', ds=16, bits=8, nominal_bpp=0.03125, device='cpu')"
    config = tiny_cod_config("cod-pixel")
    big = CoDCodec(randomise(build_network(config)), config)
    assert repr(big).startswith("CoDCodec(name='tiny-cod-pixel-0.0039', family='cod-pixel', ds=32, bits=4,") and "steps=3" in repr(big)
    assert len(repr(big).splitlines()) == 1 and len(repr(big)) < 200


# ------------------------------------------------------------------ a fast command line
LIGHT = """
import sys
from cod.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "numpy", "PIL", "matplotlib", "scipy") if m in sys.modules)
# peak RSS of this process image (VmHWM; ru_maxrss would include the forking parent's)
peak_kb = next((int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")), 0) if sys.platform == "linux" else 0
print("HEAVY", ",".join(heavy), "RSS_MB", peak_kb // 1024, file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("argv", [["--help"], ["info", "FILE"], ["info", "FILE", "--json"], ["compress", "--help"], ["bench", "--help"]])
def test_help_and_info_import_no_torch(argv, tmp_path):
    """`cod --help` and `cod info FILE` import neither torch nor numpy (issue 14: they took 1.7 s
    and 650 MB); the timings are in benchmarks/cli_startup.py."""
    from tests.conftest import ROOT

    sample = ROOT / "tests" / "data" / "sample.codlite-small-0.0312.cod"
    argv = [str(sample) if a == "FILE" else a for a in argv]
    r = subprocess.run([sys.executable, "-c", LIGHT, *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    heavy, rss = line.split("HEAVY ")[1].split(" RSS_MB ")
    assert heavy == "", f"{argv}: imported {heavy}"
    assert int(rss) < 150, f"{argv}: {rss} MB"

# ------------------------------------------------------------------ batch reports (issue 17)
def _batch_folder(tmp_path):
    """Two good images, a broken one, a sub-folder named like an image (holding one image), a
    broken symlink named like an image, and a text file."""
    src = tmp_path / "src"
    (src / "folder.png").mkdir(parents=True)
    for name in ("a.png", "b.png", "folder.png/inner.png"):
        Image.fromarray(smooth_image(32, 48)).save(src / name)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (src / "notes.txt").write_text("not an image")
    return src


def test_batch_compress_names_every_failure_and_sums_up(tmp_path, tiny_weights, capsys):
    src = _batch_folder(tmp_path)
    out = tmp_path / "out"
    assert main(["compress", str(src), "-o", str(out), "--weights", str(tiny_weights["0.0312"])]) == 1
    cap = capsys.readouterr()
    errors = [ln for ln in cap.err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2
    assert any(ln.startswith(f"error: {src / 'broken.png'}: cannot read image") for ln in errors), errors
    assert any(ln.startswith(f"error: {src / 'gone.jpg'}: broken symbolic link") for ln in errors), errors
    summary = cap.err.strip().splitlines()[-1]
    assert summary.startswith("compress: 3 ok, 2 failed, 1 skipped (not images") and "s/Mpx" in summary, summary
    assert sorted(p.name for p in out.iterdir()) == ["a.png.cod", "b.png.cod", "inner.png.cod"]  # the folder named like an image is walked
    # --verbose names the skipped file; --quiet keeps the summary only when something failed
    assert main(["compress", str(src), "-o", str(out), "--weights", str(tiny_weights["0.0312"]), "-v", "-q", "--force"]) == 1
    err = capsys.readouterr().err
    assert f"{src / 'notes.txt'}: skipped (not images)" in err and "2 failed" in err
    good = tmp_path / "good"
    good.mkdir()
    Image.fromarray(smooth_image(32, 48)).save(good / "x.png")
    Image.fromarray(smooth_image(32, 48)).save(good / "y.png")
    assert main(["compress", str(good), "--weights", str(tiny_weights["0.0312"]), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_batch_decompress_names_every_failure_and_sums_up(tmp_path, tiny_weights, capsys):
    w = str(tiny_weights["0.0312"])
    d = tmp_path / "codes"
    d.mkdir()
    img = tmp_path / "x.png"
    Image.fromarray(smooth_image(32, 48)).save(img)
    for name in ("a", "b"):
        assert main(["compress", str(img), "-o", str(d / f"{name}.cod"), "--weights", w, "-q"]) == 0
    bad = bytearray((d / "a.cod").read_bytes())
    bad[-1] ^= 1
    (d / "crc.cod").write_bytes(bytes(bad))
    (d / "dir.cod").mkdir()
    (d / "link.cod").symlink_to(tmp_path / "missing.cod")
    (d / "readme.txt").write_text("x")
    out = tmp_path / "dec"
    assert main(["decompress", str(d), "-o", str(out), "--weights", w]) == 1
    cap = capsys.readouterr()
    errors = sorted(ln for ln in cap.err.splitlines() if ln.startswith("error: "))
    assert errors == [
        f"error: {d / 'crc.cod'}: corrupt .cod file: CRC-32 mismatch",
        f"error: {d / 'dir.cod'}: is a directory",
        f"error: {d / 'link.cod'}: broken symbolic link (to {tmp_path / 'missing.cod'})",
    ], errors
    assert cap.err.strip().splitlines()[-1].startswith("decompress: 2 ok, 3 failed, 1 skipped (not .cod files")
    assert "s/Mpx" in cap.err.strip().splitlines()[-1] and "s/Mpx)" in cap.out  # time per megapixel, per file and in all
    assert sorted(p.name for p in out.iterdir()) == ["a.decoded.png", "b.decoded.png"]


def test_chroma_on_and_off(photo, tmp_path, capsys):
    """--chroma: a model with a chroma block writes .cod v4 (cod info shows the side
    information); --chroma off writes the indices alone; both decode."""
    from tests.conftest import make_tiny_weights

    w = make_tiny_weights(tmp_path / "c.safetensors", "0.0312", chroma_block=32)
    sizes = {}
    for mode in ("on", "off"):
        out = tmp_path / f"{mode}.cod"
        assert main(["compress", str(photo), "-o", str(out), "--weights", str(w), "--chroma", mode, "-q"]) == 0
        capsys.readouterr()
        assert main(["info", str(out), "--json"]) == 0
        info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert info["format_version"] == (4 if mode == "on" else 1)
        assert ("chroma_block" in info) == (mode == "on")
        if mode == "on":
            assert info["chroma_block"] == 32 and info["chroma_bytes"] + info["index_bytes"] == info["payload_bytes"]
        sizes[mode] = out.stat().st_size
        assert main(["decompress", str(out), "-o", str(tmp_path / f"{mode}.png"), "--weights", str(w), "-q"]) == 0
        assert Image.open(tmp_path / f"{mode}.png").size == (90, 70)
    assert sizes["on"] > sizes["off"]
