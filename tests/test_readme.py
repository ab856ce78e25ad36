"""Every command block of README.md runs, in order, on a fresh-clone layout.

The clone is a copy of this checkout's files (git's tracked and unignored ones) in a temporary
folder with no ``../shared`` beside it, a fresh torch hub folder, no ``COD_*`` variables, and
``cod`` on PATH running the copy. Each ```bash / ```python block of README.md is one test,
run in the clone's root as a user would paste it (later blocks see what earlier ones wrote);
it must exit 0, and each file a ``# -> NAME`` comment promises must then exist.

What the README asks the user to download is stood in by small files of the same kind, made
only where the README names them:

* ``CoD_Lite_bpp_0_0312.pt`` + ``.yaml``: the official CoD-Lite layout (``net.`` prefix,
  training leftovers) with the A4 conformance case's weights (tests/data/conformance, the
  weight rule; a narrow network of the 0.0312 rate);
* ``CoD_pixel_vpred.pt`` + ``bpp_0_0039_pix512_xl.yaml``: the official CoD pixel layout with
  the B2 case's weights (up2x, ds 32, 4 bits: the 0.0039 rate);
* ``photo.png``: a 96x64 downscale of a photo of tests/data/photos (small: DiffC at 0.1 bpp
  codes three steps of it, each a reverse-channel search); ``kodak/``: 192x176 crops of two
  others (not Kodak; small, so that the bench block stays short).

One option is made smaller for the test (SHRINK): `cod speed` times a 256x128 image instead of
1920x1024 (the same command otherwise; at full size it takes minutes on a 2-core CPU).

A block preceded by ``<!-- readme-test: skip (REASON) -->`` is skipped with that reason (the
package installs, which need the network).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conformance import write_official_cod, write_official_codlite
from tests.conftest import CONFORMANCE_SUBSET, ROOT, TEST_PHOTOS

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
FENCE = re.compile(r"(?:<!--\s*readme-test:\s*skip\s*\((?P<why>[^)]*)\)\s*-->\s*\n)?^```(?P<lang>bash|sh|shell|python)\n(?P<body>.*?)^```", re.S | re.M)
PROMISE = re.compile(r"#\s*->\s*([\w./-]+\.\w+)")


def readme_blocks(text: str) -> list[tuple[str, str, str, str | None]]:
    """(id, language, body, skip reason) of every shell or Python block, in order; the id names
    the section it is in."""
    out = []
    for m in FENCE.finditer(text):
        heading = ([h for h in re.findall(r"^#+ (.+)$", text[: m.start()], re.M)] or ["top"])[-1]
        slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")[:30]
        out.append((f"{len(out):02d}-{slug}", m.group("lang"), m.group("body"), m.group("why")))
    return out


BLOCKS = readme_blocks(README.read_text())


def _official_codlite(clone: Path) -> None:
    write_official_codlite(CONFORMANCE_SUBSET / "A4_codlite_0.0312", clone / "CoD_Lite_bpp_0_0312.pt", clone / "CoD_Lite_bpp_0_0312.yaml")


def _official_cod_pixel(clone: Path) -> None:
    write_official_cod(CONFORMANCE_SUBSET / "B2_cod_pixel_up2x_192x256", clone / "CoD_pixel_vpred.pt", clone / "bpp_0_0039_pix512_xl.yaml")


def _photo(clone: Path) -> None:
    Image.open(TEST_PHOTOS / "coffee.jpg").convert("RGB").resize((96, 64), Image.Resampling.LANCZOS).save(clone / "photo.png")


def _kodak(clone: Path) -> None:
    """Two 192x176 centre crops (MS-SSIM needs 176 px; small images keep the bench short)."""
    (clone / "kodak").mkdir()
    for name in ("rocket.jpg", "chelsea.jpg"):
        im = Image.open(TEST_PHOTOS / name).convert("RGB")
        x, y = (im.width - 192) // 2, (im.height - 176) // 2
        im.crop((x, y, x + 192, y + 176)).save(clone / "kodak" / name.replace(".jpg", ".png"))


# options made smaller for the test (module docstring)
SHRINK = {"cod speed": ("--size 1920x1024", "--size 256x128")}

# what the README names -> how to stand it in
STAND_INS = {"CoD_Lite_bpp_0_0312.pt": _official_codlite, "CoD_pixel_vpred.pt": _official_cod_pixel, "photo.png": _photo, "kodak/": _kodak}


def _clone_files() -> list[Path]:
    """This checkout's files as a clone would have them: tracked and unignored (git), or, outside
    git, every file but caches, build outputs and runs."""
    try:
        r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True, timeout=60)
        files = [Path(f) for f in r.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", ".pytest_cache", "runs", "out", "build", "dist", "results"}
        files = [p.relative_to(ROOT) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]
    return [f for f in files if (ROOT / f).is_file()]


def make_clone(base: Path) -> tuple[Path, dict[str, str]]:
    """A fresh-clone copy of this checkout in ``base``/cod, with the stand-ins the README needs:
    (its root, the environment to run the README's commands in)."""
    root = base / "cod"
    for f in _clone_files():
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, root / f)
    assert not (root.parent / "shared").exists()
    text = README.read_text()
    for name, make in STAND_INS.items():
        if name in text:
            make(root)
    bin_dir = base / "bin"
    bin_dir.mkdir()
    (bin_dir / "cod").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cod "$@"\n')
    (bin_dir / "cod").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COD_") and k != "PYTHONPATH"}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(root),
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(base / "torch-home"),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="2",
    )
    return root, env


def run_block(lang: str, body: str, root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one README block in the clone's root as a user would paste it."""
    cmd = ["bash", "-euo", "pipefail", "-c", body] if lang != "python" else [sys.executable, "-c", body]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    return make_clone(tmp_path_factory.mktemp("readme"))


def test_the_readme_has_runnable_blocks():
    runnable = [b for b in BLOCKS if b[3] is None]
    assert len(runnable) >= 6, "README.md: fewer command blocks than expected; is the fence pattern still right?"
    assert all(reason.strip() for *_, reason in BLOCKS if reason is not None)


@pytest.mark.parametrize("block", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_block_runs(block, clone):
    name, lang, body, skip = block
    if skip is not None:
        pytest.skip(f"README block {name}: {skip}")
    root, env = clone
    for command, (option, smaller) in SHRINK.items():
        if command in body:
            assert option in body, f"README block {name}: {command} no longer has {option}; update SHRINK"
            body = body.replace(option, smaller)
    r = run_block(lang, body, root, env)
    assert r.returncode == 0, f"README block {name} failed (exit {r.returncode}):\n{body}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    for promised in PROMISE.findall(body):
        assert (root / promised).exists(), f"README block {name} promises {promised}, which is not there"
