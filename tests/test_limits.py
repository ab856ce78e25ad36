"""cod.limits: the pixel limit, the step limit and the memory budget, checked from a file's
header before anything is allocated (issue 17); the crafted decompression bombs of the issue."""
import resource
import time

import numpy as np
import pytest
import torch

import cod
from cod import bitstream as bs
from cod.cli import main
from cod.errors import CodError, LimitError
from cod.limits import DEFAULT_MAX_MEMORY, DEFAULT_MAX_PIXELS, PILLOW_BOMB_PIXELS, format_bytes, parse_count, parse_memory
from cod.nn.memory import peak_bytes


@pytest.fixture(scope="module")
def codec():
    return cod.load()  # the shipped default model


def bomb(codec, height: int, width: int, fmt: str = "cod") -> bytes:
    """A valid file (right length, right CRC) of all-zero indices claiming height x width."""
    h, w = codec.grid(height, width)
    payload = bytes(bs.packed_size(h * w, codec.bits))
    if fmt == "official":
        return bs.write_official(height, width, payload)
    return bs.write_cod(bs.CodHeader(codec.family_code, codec.ds, codec.bits, codec.model_tag, height, width), payload)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ parsing and defaults
def test_defaults_are_pillows_bomb_limit_and_4_gib():
    assert DEFAULT_MAX_PIXELS == PILLOW_BOMB_PIXELS == 178_956_970
    assert DEFAULT_MAX_MEMORY == 4 * 2**30
    from PIL import Image

    assert PILLOW_BOMB_PIXELS == 2 * Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("text,n", [("179M", 179_000_000), ("12000000", 12_000_000), ("16384x8192", 2**27), ("1.5k", 1500), (640, 640)])
def test_parse_count(text, n):
    assert parse_count(text) == n


@pytest.mark.parametrize("text,n", [("4G", 4 * 2**30), ("1.5G", 3 * 2**29), ("800M", 800 * 2**20), ("2GiB", 2**31), ("100000000", 100_000_000)])
def test_parse_memory(text, n):
    assert parse_memory(text) == n


@pytest.mark.parametrize("bad", ["lots", "-5", "0", "1x", "12 Mpx"])
def test_bad_counts_are_one_line_errors(bad):
    with pytest.raises(CodError, match="--max-pixels|positive"):
        parse_count(bad)


def test_memory_below_the_minimum_is_refused():
    with pytest.raises(CodError, match="minimum"):
        parse_memory("1M")
    assert format_bytes(1536 * 2**20) == "1.5 GiB"


# ------------------------------------------------------------------ the crafted bombs of the issue
def test_1mb_file_claiming_16384_squared_is_refused_at_once(codec):
    data = bomb(codec, 16384, 16384)
    assert 1_000_000 < len(data) < 1_100_000  # the 1 MB file, valid CRC
    before = rss_mb()
    t0 = time.perf_counter()
    with pytest.raises(LimitError, match="16384x16384 image .*above the limit of 179.0 Mpx"):
        codec.decompress(data)
    assert time.perf_counter() - t0 < 2
    assert rss_mb() - before < 50  # nothing of its size was allocated


def test_official_layout_bomb_is_refused_at_once(codec):
    with pytest.raises(LimitError, match="65520x65520"):
        codec.decompress(bomb(codec, 65520, 65520, "official"), format="official")


def test_entropy_coded_bomb_is_refused_before_the_range_decoder(codec):
    from cod.entropy import fit_prior

    grids = [np.random.default_rng(i).integers(0, 2**codec.bits, (8, 8)) for i in range(5)]
    prior, _ = fit_prior(grids, codec.bits, groups=2, alphas=(16,))
    c2 = cod.load(max_pixels=64 * 64)
    c2.prior = prior
    head = bs.CodHeader(c2.family_code, c2.ds, c2.bits, c2.model_tag, 4096, 4096, coding=2, prior_tag=prior.tag)
    with pytest.raises(LimitError, match="4096x4096"):
        c2.decompress(bs.write_cod(head, b"\x01\x02\x03"))


def test_a_claim_over_the_memory_budget_is_refused_from_the_header(monkeypatch):
    """CoD-Lite decodes in tiles sized from max_memory; a claim whose image buffers alone leave
    no room for the smallest tiles is refused from the header, before anything is decoded."""
    small = cod.load(max_memory=parse_memory("256M"))
    data = bomb(small, 4096, 8192)
    with monkeypatch.context() as m:
        m.setattr(small, "decode", lambda *a, **k: pytest.fail("decoded"))
        m.setattr(bs, "unpack_indices", lambda *a, **k: pytest.fail("indices unpacked"))
        with pytest.raises(LimitError, match=r"8192x4096 image needs an estimated .* or more, above the memory budget of 256\.0 MiB"):
            small.decompress(data)
    # a claim that fits decodes (in tiles and bands sized from the budget), within the budget
    data = bomb(small, 1024, 1536)
    assert small.activation_budget(1024, 1536) == 96 * 2**20  # 3/8 of max_memory
    out = []
    assert peak_bytes(lambda: out.append(small.decompress(data))) <= 256 * 2**20
    assert out[0].size == (1536, 1024)


def test_the_activation_budget_follows_max_memory(codec):
    from cod.tiling import DEFAULT_MEMORY_BUDGET, MIN_MEMORY_BUDGET

    assert codec.activation_budget(4320, 7680) == DEFAULT_MEMORY_BUDGET == 3 * DEFAULT_MAX_MEMORY // 8
    tight = cod.load(max_memory=parse_memory("200M"))
    assert tight.activation_budget(64, 64) == 75 * 2**20
    assert tight.activation_budget(2048, 2048) == (200 - 64 - 64) * 2**20  # what the image buffers leave
    with pytest.raises(LimitError, match="2560x2048"):
        tight.activation_budget(2048, 2560)  # not even the smallest tiles fit
    assert cod.load(max_memory=None).activation_budget(99999, 99999) == DEFAULT_MEMORY_BUDGET
    assert cod.load(memory_budget=MIN_MEMORY_BUDGET).activation_budget(64, 64) == MIN_MEMORY_BUDGET


def test_no_limits_when_asked(codec):
    free = cod.load(max_pixels=None, max_memory=None)
    assert free.decompress(bomb(free, 40, 56)).size == (56, 40)
    strict = cod.load(max_pixels=40 * 56 - 1)
    with pytest.raises(LimitError):
        strict.decompress(bomb(strict, 40, 56))


# ------------------------------------------------------------------ the estimate
def test_the_estimate_bounds_the_tensors_of_a_real_decode(codec):
    """decode_memory (traced on the meta device, times the scratch factor, plus the image
    buffers) is at least the tensor peak of the real decode, and not absurdly above it."""
    h = w = 256
    grid = codec.grid(h, w)
    idx = np.zeros(grid[0] * grid[1], dtype=np.int64)
    # the whole-image decode the trace describes, on real tensors
    real = peak_bytes(lambda: codec._decode_trace(grid, None, codec.device))
    est = codec.decode_memory(h, w, grid)
    assert real <= est <= 4 * real
    # CoD-Lite's own decode (pixel head in bands, tiles when the budget asks) stays below it
    assert peak_bytes(lambda: type(codec).decode.__wrapped__(codec, idx, h, w, grid)) <= est
    # the cheap bound (bytes per pixel of a small decode) is above the full trace
    bound = codec.decode_memory(h, w, grid, budget=2**40)
    assert bound >= est


# ------------------------------------------------------------------ CoD: steps a file may ask for
def test_cod_file_asking_for_too_many_steps_is_refused(tmp_path):
    from cod.checkpoint import save_weights
    from cod.families import build_network, load_cod
    from tests.test_cod_codec import randomise, smooth_image, tiny_cod_config

    cfg = tiny_cod_config("cod-pixel")
    path = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    save_weights(path, randomise(build_network(cfg)).state_dict(), cfg)
    c = load_cod(weights=path, max_steps=50)
    data = c.compress(smooth_image(32, 32), steps=51)
    with pytest.raises(LimitError, match="51 network evaluations, above the limit of 50"):
        c.decompress(data)
    assert c.decompress(data, steps=2).size == (32, 32)  # an explicit override within the limit


# ------------------------------------------------------------------ the command line
def test_cli_refuses_a_bomb_in_one_line_and_writes_nothing(codec, tmp_path, capsys):
    f = tmp_path / "bomb.cod"
    f.write_bytes(bomb(codec, 16384, 16384))
    assert main(["decompress", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {f}: file claims a 16384x16384 image"), err
    assert not list(tmp_path.glob("*.png"))


def test_cli_limits_move_both_ways(codec, tmp_path, capsys):
    f = tmp_path / "small.cod"
    f.write_bytes(bomb(codec, 48, 64))
    assert main(["decompress", str(f), "--max-pixels", "3000"]) == 1
    assert "(3072 pixels), above the limit of 3000 pixels" in capsys.readouterr().err
    assert main(["decompress", str(f), "--max-pixels", "64x48", "--max-memory", "none"]) == 0
    out = capsys.readouterr().out
    assert "64x48" in out and "s/Mpx" in out
    assert main(["decompress", str(f), "--max-memory", "12 parsecs"]) == 2
    assert "--max-memory '12 parsecs'" in capsys.readouterr().err
