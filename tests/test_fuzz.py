"""tools/fuzz.py (issue 17): a short coverage-guided run of every reader, and the saved inputs
of tests/data/fuzz (findings and crafted files) replayed through the same targets."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

FUZZ = ROOT / "tools" / "fuzz.py"


def _run(args, cwd, timeout):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, str(FUZZ), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return res.returncode, res.stdout + res.stderr


def test_a_short_fuzzing_run_breaks_no_promise(tmp_path):
    """About 25 s of atheris over every target: every input ends in an image of the claimed
    size or a CodError, within the time and memory bounds (else libFuzzer fails the run)."""
    pytest.importorskip("atheris", reason="the fuzzer needs atheris (pip install 'cod[fuzz]')")
    rc, out = _run(["--max-time", "25", "--seed", "1"], tmp_path, 600)
    why = [ln for ln in out.splitlines() if any(w in ln for w in ("ERROR", "SUMMARY", "Uncaught", "Error", "Finding", "rss:"))]
    assert rc == 0, "\n".join(why[-30:]) + "\n" + out[-3000:]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))]
    runs = int(re.search(r"Done (\d+) runs", out).group(1))
    assert runs >= 200, out[-2000:]
    outcomes = re.findall(r"outcomes after \d+ inputs .*", out)
    assert outcomes and "'image'" in outcomes[-1] and "'BitstreamError'" in outcomes[-1], outcomes[-1:]
    assert re.search(r"cov: (\d+)", out)


def test_saved_inputs_replay_cleanly(tmp_path):
    """The findings of the long runs (tests/data/fuzz) stay fixed."""
    rc, out = _run(["--replay", str(ROOT / "tests" / "data" / "fuzz")], tmp_path, 600)
    assert rc == 0, out[-4000:]
    n = int(re.search(r"(\d+) inputs, 0 findings", out).group(1))
    assert n == len(list((ROOT / "tests" / "data" / "fuzz").glob("*.bin")))
