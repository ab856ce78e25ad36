"""DiffC on small random-weight CoD pixel and latent models (cod.diffc.chain, issue 13): the
decoder reproduces the encoder bit-exactly at several sizes, the rate follows the KL, PSNR
rises as the chain stops closer to the data, target rates land, bad payloads are refused."""
import math

import numpy as np
import pytest
import torch

from cod.families import build_network as build_cod
from cod.diffc import DiffCConfig, DiffCPayload, decode, encode, encoder_steps, flow_model, steps_for_timestep
from cod.diffc.bridge import LATENT_ENCODING_TIMESTEPS, PIXEL_ENCODING_TIMESTEPS, ddim_finish
from cod.diffc.chain import payload_bits_for_bpp
from cod.errors import BitstreamError
from cod.models.vae import LatentVAE
from tests.test_cod_codec import randomise, smooth_image, tiny_cod_config, tiny_vae

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT_PIXEL = PIXEL_ENCODING_TIMESTEPS[::18]  # 8 steps, 972 .. 32
SHORT_LATENT = LATENT_ENCODING_TIMESTEPS[::16]  # 10 steps, 972 .. 10


@pytest.fixture(scope="module")
def nets():
    out = {}
    for i, family in enumerate(["cod-pixel", "cod-latent"]):
        torch.manual_seed(0)
        out[family] = randomise(build_cod(tiny_cod_config(family)), seed=i).eval()
    return out


@pytest.fixture(scope="module")
def vae():
    return LatentVAE(tiny_vae())


def problem(nets, vae, family, h, w, seed=0):
    """(network, diffusion target, condition map) of a smooth h x w test image."""
    x01 = torch.from_numpy(smooth_image(h, w, seed)).permute(2, 0, 1)[None].float() / 255
    net = nets[family]
    with torch.inference_mode():
        cond = net.condition(x01)[0]
        target = x01 * 2 - 1 if family == "cod-pixel" else vae.encode(x01, sample=False)
    return net, target, cond


def psnr(x, target, peak=2.0):
    """PSNR in the diffusion space: pixels clamped to [-1, 1] (peak 2); latents as they are."""
    if peak == 2.0:
        x = x.clamp(-1, 1)
    return 10 * math.log10(peak**2 / float((x - target).square().mean()))


# ------------------------------------------------------------------ bit-exact decoding
@pytest.mark.parametrize("family,h,w", [("cod-pixel", 32, 32), ("cod-pixel", 32, 64), ("cod-pixel", 64, 32), ("cod-latent", 64, 64), ("cod-latent", 32, 96)])
def test_decoder_reproduces_the_encoder_bit_exactly(nets, vae, family, h, w):
    net, target, cond = problem(nets, vae, family, h, w)
    config = DiffCConfig.for_family(family, encoding_timesteps=SHORT_PIXEL if family == "cod-pixel" else SHORT_LATENT, max_chunk_size=6)
    res = encode(net, target, cond, config=config)
    assert res.n_steps == len(config.encoding_timesteps) and res.reconstruction.shape == target.shape
    out = decode(net, res.payload, cond, tuple(target.shape))
    assert torch.equal(out, res.reconstruction)


def test_the_encoder_is_reproducible(nets, vae):
    """The arrival times are seeded too: the same image, model and settings give the same
    bytes; another seed gives other bytes that decode as well."""
    net, target, cond = problem(nets, vae, "cod-pixel", 32, 32)
    config = DiffCConfig(encoding_timesteps=SHORT_PIXEL[:5], max_chunk_size=6)
    a, b = encode(net, target, cond, config=config), encode(net, target, cond, config=config)
    assert a.payload == b.payload and torch.equal(a.reconstruction, b.reconstruction)
    other = encode(net, target, cond, config=DiffCConfig(encoding_timesteps=SHORT_PIXEL[:5], max_chunk_size=6, seed=7))
    assert other.payload != a.payload
    assert torch.equal(decode(net, other.payload, cond, tuple(target.shape)), other.reconstruction)


# ------------------------------------------------------------------ rate
def test_coded_size_is_close_to_the_kl(nets, vae):
    """Stream bits / sum KL is 1.10 with max_chunk_size 8 (and 1.21 with 6, 1.05 with 10; see
    docs/diffc.md): padding bits and the Zipf code's overhead per chunk."""
    net, target, cond = problem(nets, vae, "cod-pixel", 32, 64)
    res = encode(net, target, cond, config=DiffCConfig(encoding_timesteps=PIXEL_ENCODING_TIMESTEPS[::4], max_chunk_size=8), n_steps=16)
    assert not any(s.saturated for s in res.steps)
    ratio = res.stream_bits / res.kl_bits
    print(f"coded/KL = {res.stream_bits}/{res.kl_bits:.0f} = {ratio:.3f}")
    assert 1.0 < ratio < 1.2
    est = sum(s.coded_bits for s in res.steps)
    assert est <= res.stream_bits <= est + 64


@pytest.mark.parametrize("target_bits,check_nearest", [(2_000, True), (8_000, False)])
def test_target_rate_lands_within_ten_percent(nets, vae, target_bits, check_nearest):
    net, target, cond = problem(nets, vae, "cod-pixel", 32, 64)
    config = DiffCConfig(max_chunk_size=6)  # the original's 142-step schedule
    res = encode(net, target, cond, config=config, target_bits=target_bits)
    real = 8 * len(res.payload)
    print(f"target {target_bits} bits: {real} bits in {res.n_steps} steps")
    assert abs(real - target_bits) <= 0.1 * target_bits, (real, target_bits, res.n_steps)
    assert torch.equal(decode(net, res.payload, cond, tuple(target.shape)), res.reconstruction)
    if check_nearest:  # one step fewer or more would be further away
        for n in (res.n_steps - 1, res.n_steps + 1):
            alt = 8 * len(encode(net, target, cond, config=config, n_steps=n).payload)
            assert abs(alt - target_bits) >= abs(real - target_bits)


def test_payload_bits_for_bpp():
    # 0.1 bpp of a 512 x 512 image, of which the container and CoD indices take 158 bytes
    assert payload_bits_for_bpp(0.1, 512, 512, 158) == pytest.approx(0.1 * 512 * 512 - 8 * 158)


def test_zero_steps(nets, vae):
    net, target, cond = problem(nets, vae, "cod-pixel", 32, 32)
    config = DiffCConfig(encoding_timesteps=SHORT_PIXEL, max_chunk_size=6)
    res = encode(net, target, cond, config=config, target_bits=10)  # less than the header
    assert res.n_steps == 0 and len(res.payload) == DiffCPayload.overhead_bytes(config)
    assert torch.equal(decode(net, res.payload, cond, tuple(target.shape)), res.reconstruction)


# ------------------------------------------------------------------ fidelity
@pytest.mark.parametrize("family", ["cod-pixel", "cod-latent"])
def test_psnr_rises_as_the_stop_moves_toward_the_data(nets, vae, family):
    """Stopping later buys fidelity: PSNR of the finished reconstruction (in the diffusion
    space) at every 4th step of a 24-step schedule rises monotonically."""
    h, w = (32, 64) if family == "cod-pixel" else (64, 64)
    net, target, cond = problem(nets, vae, family, h, w)
    sched = (PIXEL_ENCODING_TIMESTEPS if family == "cod-pixel" else LATENT_ENCODING_TIMESTEPS)[::6]
    config = DiffCConfig.for_family(family, encoding_timesteps=sched[:24], max_chunk_size=6)
    enc_fn = flow_model(net, cond, None, config.encoding_guidance)
    dec_fn = flow_model(net, cond, None, config.decoding_guidance)
    peak = 2.0 if family == "cod-pixel" else 2 * float(target.abs().max())
    values = []
    for st in encoder_steps(enc_fn, target, config):
        if st.stats.step % 4 == 3:
            with torch.inference_mode():
                values.append(psnr(ddim_finish(dec_fn, st.x, st.stats.tau_next, config.finishing_timesteps), target, peak))
            if st.stats.step == 7:
                stop8 = values[-1]
    print(family, [round(v, 2) for v in values])
    assert all(b > a for a, b in zip(values, values[1:])), values
    # encode() with a stop gives the same reconstruction as finishing the chain there
    res = encode(net, target, cond, config=config, n_steps=8)
    assert psnr(res.reconstruction, target, peak) == stop8


class Oracle(torch.nn.Module):
    """A perfect velocity model for one target (v = (x0 - x_t) / (1 - t)), shaped like a CoD
    network: what a well-trained model approaches."""

    def __init__(self, net, x0):
        super().__init__()
        self.net, self.x0 = net, x0
        self.condition, self.pixels_per_token = net.condition, net.pixels_per_token

    def forward(self, x, t, cond=None):
        return (self.x0 - x) / (1 - t.reshape(-1, 1, 1, 1)).clamp_min(1e-3), cond


def test_a_perfect_model_costs_almost_nothing(nets, vae):
    """P = Q up to rounding: every step's KL is ~0 (a 3-bit chunk at most), and the
    reconstruction is the target."""
    net, target, cond = problem(nets, vae, "cod-pixel", 32, 32)
    oracle = Oracle(net, target)
    res = encode(oracle, target, cond, config=DiffCConfig(encoding_timesteps=SHORT_PIXEL, max_chunk_size=6))
    assert max(s.kl_bits for s in res.steps) < 1e-3 and max(s.budget_bits for s in res.steps) <= 1
    assert res.stream_bits <= 4 * res.n_steps + 32  # ~2-3 bits a step, 32-bit words
    assert psnr(res.reconstruction, target) > 60
    assert torch.equal(decode(oracle, res.payload, cond, tuple(target.shape)), res.reconstruction)


# ------------------------------------------------------------------ bad payloads
def test_corrupt_or_truncated_payloads_are_clean_errors_or_decode(nets, vae):
    """Payload version 2 has no CRC of its own (the .cod container's covers it, and
    tests/test_cod_diffc.py checks files): a damaged payload on its own is refused with a
    BitstreamError or decodes to some image of the right shape, never anything else."""
    net, target, cond = problem(nets, vae, "cod-pixel", 32, 32)
    res = encode(net, target, cond, config=DiffCConfig(encoding_timesteps=SHORT_PIXEL[:4], max_chunk_size=6))
    data = res.payload
    g = np.random.default_rng(0)
    for bad in [data[: len(data) // 2 - 1], data[:-1], data[:12], b"", bytes(g.integers(0, 256, 40, dtype=np.uint8))]:
        with pytest.raises(BitstreamError):
            decode(net, bad, cond, tuple(target.shape))
    for i in g.choice(len(data), 10, replace=False):
        bad = bytearray(data)
        bad[i] ^= 1 << int(g.integers(8))
        try:
            out = decode(net, bytes(bad), cond, tuple(target.shape))
        except BitstreamError:
            continue
        assert out.shape == target.shape


def test_steps_for_timestep():
    config = DiffCConfig.for_family("cod-pixel")
    assert steps_for_timestep(config, 1000) == 1 and steps_for_timestep(config, 972) == 1
    assert steps_for_timestep(config, 900) == 4  # 972, 949, 929, 897
    assert steps_for_timestep(config, 20) == 142 and steps_for_timestep(config, 5) == 142
