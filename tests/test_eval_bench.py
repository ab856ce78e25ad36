"""bench / results JSON / plot / CLI / speed, with baselines, a fake fixed-rate codec and our codec."""
import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cod.errors import CodError
from cod.eval import metrics as M
from cod.eval.baselines import get_baseline
from cod.eval.bench import SERIES_KEYS, bench, curve_name, load_results, save_results
from cod.eval.cli import add_eval_subcommands
from cod.cli import main as eval_main
from cod.eval.plot import plot_rd
from cod.eval.schema import RESULT_KEYS, validate_results
from cod.eval.speed import format_speed, speed
from tests.conftest import DATA, TEST_PHOTOS

KODAK = DATA / "kodak"
TARGETS = [0.4, 0.8, 1.6]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: small convolutions run faster and CPU use stays modest on 2 shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class FakeCodec:
    """A fixed-rate codec: raw pixels of a k-times downscaled image, upscaled on decode (returns PIL)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.name = f"fakecodec-{24 / factor**2:g}"

    def compress(self, image) -> bytes:
        arr = np.asarray(image)
        h, w = arr.shape[:2]
        small = Image.fromarray(arr).resize((w // self.factor, h // self.factor), Image.Resampling.BOX)
        return h.to_bytes(2, "big") + w.to_bytes(2, "big") + small.tobytes()

    def decompress(self, data: bytes) -> Image.Image:
        h, w = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
        small = Image.frombytes("RGB", (w // self.factor, h // self.factor), data[4:])
        return small.resize((w, h), Image.Resampling.BICUBIC)


def make_images(n=2, side=176):
    """n side x side centre crops of half-size Kodak images (of the committed test photos
    where the data folder is absent)."""
    out = []
    for name, fallback in zip(["kodim03.png", "kodim19.png", "kodim05.png"][:n], ["coffee.jpg", "astronaut.jpg", "chelsea.jpg"]):
        if (KODAK / name).is_file():
            img = Image.open(KODAK / name).convert("RGB")
            img = img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS)
        else:
            name, img = fallback.replace(".jpg", ".png"), Image.open(TEST_PHOTOS / fallback).convert("RGB")
        arr = np.asarray(img)
        y, x = (arr.shape[0] - side) // 2, (arr.shape[1] - side) // 2
        out.append((name, np.ascontiguousarray(arr[y : y + side, x : x + side])))
    return out


def standin_suite():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    return M.MetricSuite(
        ["psnr-rgb", "ms-ssim-rgb", "lpips", "fid", "kid"],
        lpips_alex=M.build_lpips("alex", None),
        inception=M.PatchFeatures(net, input_size=None),
        fid_patch=64,
        kid_subsets=5,
    )


@pytest.fixture(scope="module")
def images():
    return make_images()


@pytest.fixture(scope="module")
def results(images):
    codecs = [get_baseline("jpeg"), get_baseline("webp"), FakeCodec(4), FakeCodec(2)]
    return bench(codecs, images, TARGETS, suite=standin_suite(), dataset="kodak-test", progress=False)


def test_bench_results_follow_the_schema(results, images):
    assert [r["name"] for r in results] == ["jpeg", "webp", "fakecodec"]
    for res in results:
        validate_results(res)
        r = res["results"]
        assert set(RESULT_KEYS) <= set(r) and set(r) == set(SERIES_KEYS)
        assert r["bpp"] == sorted(r["bpp"])
        assert all(v is None for v in r["dists"])  # not asked for: null, not absent
        for i, point in enumerate(res["details"]):
            sizes = [(im["bytes"], im["height"] * im["width"]) for im in point["images"]]
            assert r["bpp"][i] == pytest.approx(np.mean([8 * b / px for b, px in sizes]))  # real byte counts
            assert r["psnr-rgb"][i] == pytest.approx(np.mean([im["psnr-rgb"] for im in point["images"]]))
            assert r["lpips"][i] is not None and r["fid"][i] is not None and r["kid"][i] is not None
            assert r["encoding_time"][i] > 0 and r["decoding_time"][i] > 0
            assert len(point["images"]) == len(images)
        assert res["meta"]["fid_patch_size"] == 64 and "64x64 patches" in res["description"]
        assert res["meta"]["fid_patches_per_set"] == 2 * (2 * 2 + 2 * 2)  # 176 px, p=64: 2x2 + 2x2 shifted


def test_baseline_points_hit_targets_from_below(results):
    jpeg = results[0]
    assert len(jpeg["details"]) == 3
    for point in jpeg["details"]:
        for im in point["images"]:
            assert im["target_reached"] and im["bpp"] <= point["target_bpp"]
    psnrs = jpeg["results"]["psnr-rgb"]
    assert psnrs == sorted(psnrs)


def test_fixed_rate_codecs_share_a_curve(results):
    fake = results[2]
    assert fake["meta"]["target_bpp"] == [None, None]
    assert fake["results"]["bpp"][0] == pytest.approx(1.5 + 32 / 176**2, rel=0.05)
    assert [d["codec"] for d in fake["details"]] == ["fakecodec-1.5", "fakecodec-6"]
    assert curve_name(FakeCodec(4)) == "fakecodec" and curve_name(get_baseline("avif-down2")) == "avif-down2"


def test_unreachable_targets_are_merged_not_repeated(images):
    suite = M.MetricSuite(["psnr-rgb"])
    (res,) = bench([get_baseline("jpeg")], images[:1], [0.001, 0.002, 1.0], suite=suite, progress=False)
    assert len(res["results"]["bpp"]) == 2
    assert res["meta"]["lowest_bpp"] == pytest.approx(res["results"]["bpp"][0])
    assert "0.002" in res["meta"]["notes"]["jpeg"]
    assert not res["details"][0]["images"][0]["target_reached"]


def test_different_qualities_with_identical_files_are_one_point(images):
    """AVIF at Pillow qualities 0 and 2 writes the same file: two targets that land on such
    qualities give one point, not a duplicate (which would break BD-rate's monotone curve)."""
    jpeg = get_baseline("jpeg")

    class Floored:
        name, quality_range, integer_quality = "floored", jpeg.quality_range, True

        def compress(self, img, quality):
            return jpeg.compress(img, max(quality, 40))  # every quality below 40 gives the same file

        def decompress(self, data):
            return jpeg.decompress(data)

        def describe(self):
            return "jpeg with quality floored at 40"

    suite = M.MetricSuite(["psnr-rgb"])
    low = 8 * len(jpeg.compress(images[0][1], 40)) / np.prod(images[0][1].shape[:2])
    (res,) = bench([Floored()], images[:1], [0.9 * low, 1.01 * low], suite=suite, progress=False)
    assert len(res["results"]["bpp"]) == 1 and "no extra point" in res["meta"]["notes"]["floored"]


def test_save_load_round_trip_and_strict_json(results, tmp_path):
    path = save_results(results[0], tmp_path)
    assert path == tmp_path / "jpeg.json"

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    assert json.loads(path.read_text(), parse_constant=no_nan) == load_results(path)
    path.write_text("{broken")
    with pytest.raises(CodError, match="not a readable JSON"):
        load_results(path)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("name"), "'name' is a required property"),
        (lambda d: d["results"].pop("fid"), "'fid' is a required property"),
        (lambda d: d["results"]["psnr-rgb"].append(30.0), "has 4 values but bpp has 3"),
        (lambda d: d["results"]["bpp"].__setitem__(0, -1), "results/bpp/0"),
        (lambda d: d["results"]["lpips"].__setitem__(0, "low"), "results/lpips/0"),
        (lambda d: d["details"].pop(), "details has 2 points"),
    ],
)
def test_validate_results_rejects_bad_files(results, mutate, match):
    bad = json.loads(json.dumps(results[0]))
    mutate(bad)
    with pytest.raises(CodError, match=match):
        validate_results(bad)


def test_plot_png(results, tmp_path):
    out = plot_rd(results, tmp_path / "plots" / "rd.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        assert im.width > 1000 and im.height > 700  # 3x2 panels: psnr, ms-ssim, lpips, fid, kid
    with pytest.raises(CodError, match="no metric has values"):
        plot_rd(results, tmp_path / "x.png", metrics=["dists"])
    with pytest.raises(CodError, match="cannot plot metric 'foo'"):
        plot_rd(results, tmp_path / "x.png", metrics=["foo"])


def test_plot_joins_curves_of_one_codec_from_separate_runs(tmp_path):
    """jpeg2000 benched at 0.1 in one run and at 0.025 in another is one curve, in bpp order;
    delta-e has a panel; a metric one run lacks is None at its points."""
    from cod.eval.plot import merge_curves

    hi = {"name": "jpeg2000", "results": {"bpp": [0.1], "psnr-rgb": [26.0], "delta-e": [4.7]}}
    lo = {"name": "jpeg2000", "results": {"bpp": [0.025], "psnr-rgb": [22.4]}}
    ours = {"name": "ours", "results": {"bpp": [0.026], "psnr-rgb": [20.5], "delta-e": [9.2]}}
    merged = merge_curves([hi, ours, lo])
    assert [c["name"] for c in merged] == ["jpeg2000", "ours"]
    assert merged[0]["results"] == {"bpp": [0.025, 0.1], "psnr-rgb": [22.4, 26.0], "delta-e": [None, 4.7]}
    out = plot_rd([hi, ours, lo], tmp_path / "de.png", metrics=["delta-e"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_docs_show_the_schema_in_use():
    """docs/evaluation.md prints RESULTS_SCHEMA verbatim (regenerate the block when the schema changes)."""
    from cod.eval.schema import RESULTS_SCHEMA

    doc = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    assert json.dumps(RESULTS_SCHEMA, indent=2) in doc


# ----------------------------------------------------------------------------- CLI
def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="cod")
    add_eval_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, images):
    d = tmp_path_factory.mktemp("imgs")
    for name, img in images:
        Image.fromarray(img).save(d / name)
    return d


def test_cli_bench_plot_bdrate(image_dir, tmp_path, capsys):
    out = tmp_path / "results"
    rc = run_cli("bench", image_dir, "--codec", "jpeg", "--codec", "webp", "--bpp", "0.5,1,2", "-o", out, "--metrics", "psnr-rgb,ms-ssim-rgb", "--limit", "2", "--crop", "160", "-q")
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "jpeg" in printed
    jpeg = load_results(out / "jpeg.json")
    assert jpeg["meta"]["crop"] == 160 and jpeg["meta"]["num_images"] == 2
    assert jpeg["details"][0]["images"][0]["width"] == 160
    assert jpeg["results"]["ms-ssim-rgb"][0] is None  # 160 px: below MS-SSIM's minimum, with a note
    assert "176 px" in jpeg["meta"]["notes"]["ms-ssim-rgb"]

    assert run_cli("plot", out / "jpeg.json", out / "webp.json", "-o", tmp_path / "rd.png") == 0
    assert (tmp_path / "rd.png").stat().st_size > 0
    capsys.readouterr()
    assert run_cli("bdrate", out / "jpeg.json", out / "jpeg.json", "--metric", "psnr-rgb") == 0
    assert "jpeg vs jpeg: BD-rate (psnr-rgb) +0.00 %" in capsys.readouterr().out


def test_cli_errors_are_one_line(image_dir, tmp_path, capsys):
    assert eval_main(["bench", str(image_dir), "--codec", "jpeg", "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: baseline codecs need target rates: add --bpp 0.05,0.1,0.2"
    assert eval_main(["bdrate", str(tmp_path / "missing.json"), str(tmp_path / "missing.json")]) == 1  # runtime: an input is missing
    assert "no such file" in capsys.readouterr().err
    assert eval_main(["bench", str(image_dir), "--codec", "jpeg", "--bpp", "0.1,x"]) == 2
    assert "--bpp" in capsys.readouterr().err
    assert eval_main(["speed", "--model", "jpeg", "--size", "big"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_cli_bench_with_our_codec(image_dir, tmp_path, tiny_weights):
    """Our codec through the `cod.load` contract: one point per model, bpp from the real .cod bytes."""
    rc = run_cli("bench", image_dir, "--codec", "codlite-0.0312", "--weights", tiny_weights["0.0312"], "-o", tmp_path, "--metrics", "psnr-rgb", "--limit", "1", "--crop", "64", "-q")
    assert rc == 0
    (path,) = tmp_path.glob("*.json")
    res = load_results(path)
    (point,) = res["details"]
    im = point["images"][0]
    assert im["bpp"] == 8 * im["bytes"] / (64 * 64) and im["bpp"] > 0.0312  # payload plus the header


# ----------------------------------------------------------------------------- speed
def test_speed_report(tmp_path, capsys):
    report = speed(FakeCodec(2), size=(64, 96), warmup=1, runs=3)
    assert report["size"] == [64, 96] and report["runs"] == 3 and report["warmup"] == 1
    assert report["device"] == "cpu" and report["hardware"]["cpu"] and report["threads"] >= 1
    for key in ("encode_ms", "decode_ms"):
        s = report[key]
        assert len(s["all"]) == 3 and s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"]
    assert report["bytes"] == 4 + 32 * 48 * 3 and math.isfinite(report["peak_memory"]["encode_mib"])
    assert "median" in format_speed(report)
    assert run_cli("speed", "--model", "jpeg", "--quality", "60", "--size", "96x64", "--warmup", "0", "--runs", "2", "--json", tmp_path / "s.json") == 0
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["codec"] == "jpeg-q60" and saved["size"] == [64, 96]
    assert "jpeg-q60 at 96x64 on cpu" in capsys.readouterr().out
    with pytest.raises(CodError, match="runs >= 1"):
        speed(FakeCodec(2), size=(8, 8), runs=0)


# ----------------------------------------------------------------------------- keeping the work
class Interrupting(FakeCodec):
    """A fixed-rate codec that counts its calls and can stop the run (Ctrl-C) at its first image."""

    calls = 0

    def __init__(self, factor, interrupt=False):
        super().__init__(factor)
        self.interrupt = interrupt

    def compress(self, image):
        Interrupting.calls += 1
        if self.interrupt:
            raise KeyboardInterrupt
        return super().compress(image)


def test_an_interrupted_bench_keeps_its_points_and_resumes(images, tmp_path, capsys):
    """Results are written after every point; a rerun with resume=True runs only the missing
    points (with a progress bar over images x points still to run) and gives the same curves."""
    suite = M.MetricSuite(["psnr-rgb"])
    out = tmp_path / "results"
    jpeg = get_baseline("jpeg")
    with pytest.raises(KeyboardInterrupt):
        bench([jpeg, Interrupting(4), Interrupting(2, interrupt=True)], images, TARGETS, suite=suite, output=out, progress=False)
    first = load_results(out / "jpeg.json", strict=True)
    assert len(first["details"]) == 3 and [d["codec"] for d in load_results(out / "fakecodec.json")["details"]] == ["fakecodec-1.5"]

    Interrupting.calls = 0
    resumed = bench([jpeg, Interrupting(4), Interrupting(2)], images, TARGETS, suite=suite, output=out, resume=True, progress=True)
    assert Interrupting.calls == len(images)  # only fakecodec-6 ran
    bar = capsys.readouterr().err
    assert f"{len(images)}/{len(images)} [" in bar and "<" in bar  # images x missing points, elapsed<remaining
    by_name = {r["name"]: r for r in resumed}
    assert by_name["jpeg"]["details"] == first["details"]  # taken as they were
    assert [d["codec"] for d in by_name["fakecodec"]["details"]] == ["fakecodec-1.5", "fakecodec-6"]
    assert load_results(out / "fakecodec.json", strict=True)["results"] == by_name["fakecodec"]["results"]

    Interrupting.calls = 0
    bench([jpeg, Interrupting(4), Interrupting(2)], images, TARGETS, suite=suite, output=out, resume=True, progress=False)
    assert Interrupting.calls == 0  # nothing left to run
    with pytest.raises(CodError, match=r"jpeg\.json was measured with other settings \(metrics\); pass --force"):
        bench([jpeg], images, TARGETS, suite=M.MetricSuite(["psnr-rgb", "ms-ssim-rgb"]), output=out, resume=True, progress=False)
    with pytest.raises(CodError, match=r"other settings \(images, crop\)"):
        bench([jpeg], images[:1], TARGETS, suite=suite, output=out, resume=True, crop=100, progress=False)


def test_resume_keeps_merged_targets_merged(images, tmp_path):
    suite = M.MetricSuite(["psnr-rgb"])
    (res,) = bench([get_baseline("jpeg")], images[:1], [0.001, 0.002, 1.0], suite=suite, output=tmp_path, progress=False)
    assert res["meta"]["merged_targets"] == [["jpeg", 0.002]]
    calls = []
    jpeg = get_baseline("jpeg")
    compress = jpeg.compress
    jpeg.compress = lambda *a, **k: calls.append(1) or compress(*a, **k)
    (again,) = bench([jpeg], images[:1], [0.001, 0.002, 1.0], suite=suite, output=tmp_path, resume=True, progress=False)
    assert not calls and again["results"] == res["results"] and "0.002" in again["meta"]["notes"]["jpeg"]


def test_cli_bench_refuses_existing_results_unless_resume_or_force(image_dir, tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["bench", str(image_dir), "--codec", "jpeg", "--bpp", "0.5,1", "-o", str(out), "--metrics", "psnr-rgb", "--limit", "1", "--crop", "64", "-q"]
    assert eval_main(argv) == 0
    before = (out / "jpeg.json").read_text()
    capsys.readouterr()
    assert eval_main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {out / 'jpeg.json'} exists; pass --resume to continue it, or --force to start over"
    assert eval_main([*argv[:5], "0.5,1,2", *argv[6:], "--resume"]) == 0  # one more target: one more point
    assert len(load_results(out / "jpeg.json")["results"]["bpp"]) == 3
    assert eval_main([*argv, "--force"]) == 0 and len(load_results(out / "jpeg.json")["results"]["bpp"]) == 2
    assert json.loads(before)["details"][0]["bpp"] > 0
    assert eval_main([*argv, "--force", "--resume"]) == 2
