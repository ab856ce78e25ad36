"""cod.inference: the precision rule, the fast form against the faithful modules, and the
accuracy budget of the fast path (issue 16) on the shipped models."""
import numpy as np
import pytest
import torch

import cod
from cod import inference
from cod.errors import CodError
from cod.inference import FaithfulCoDLite, FastCoDLite, PrecisionPlan, resolve_precision
from cod.tensor_io import image_to_tensor
from tests.conftest import ROOT, make_tiny_weights

WEIGHTS = sorted((ROOT / "cod" / "weights").glob("codlite-small-*.safetensors"))
SAMPLE = ROOT / "cod" / "samples" / "parrots.png"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_native_bf16_respects_a_onednn_isa_cap(monkeypatch):
    """A oneDNN capped below AVX-512 BF16 would emulate bf16 (slower than fp32): fast then
    chooses fp32, as on an AVX2 CPU."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert not inference.cpu_native_bf16()
    assert resolve_precision("fast", "cpu").decoder_dtype == torch.float32
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert inference.cpu_native_bf16()


def test_precision_rule(monkeypatch):
    assert resolve_precision("fp32").faithful
    bf = resolve_precision("bf16")
    assert not bf.faithful and bf.encoder_dtype == bf.decoder_dtype == torch.bfloat16
    monkeypatch.setattr(inference, "cpu_native_bf16", lambda: True)
    p = resolve_precision("fast", "cpu")  # native bf16: the mixed encoder
    assert (p.encoder_dtype, p.encoder_stream, p.decoder_dtype) == (torch.bfloat16, torch.float32, torch.bfloat16) and "native" in p.reason
    assert p.encoder_mixed and "mixed" in p.describe()
    monkeypatch.setattr(inference, "cpu_native_bf16", lambda: False)
    p = resolve_precision("fast", "cpu")
    assert (p.encoder_dtype, p.encoder_stream, p.decoder_dtype) == (torch.float32, torch.float32, torch.float32) and not p.encoder_mixed
    p = resolve_precision("fast", "cuda")  # the rule only: no GPU needed to decide
    assert (p.encoder_dtype, p.encoder_stream, p.decoder_dtype) == (torch.float32, torch.float32, torch.bfloat16)
    p = resolve_precision("fast", "cpu", encoder="bf16")
    assert p.encoder_dtype == p.encoder_stream == torch.bfloat16 and not p.encoder_mixed
    assert resolve_precision("fast", "cpu", encoder="mixed").encoder_mixed
    assert resolve_precision("bf16", "cpu").encoder_stream == torch.bfloat16
    with pytest.raises(CodError, match="unknown precision"):
        resolve_precision("fp8")
    with pytest.raises(CodError):
        resolve_precision("fast", encoder="int8")


@pytest.fixture(scope="module")
def refine_model(tmp_path_factory):
    """A tiny CoD-Lite with the output refinement and a 4-position attention window, so that
    the fast form's windows, padding and refinement all run."""
    path = make_tiny_weights(tmp_path_factory.mktemp("w") / "r.safetensors", "0.0312", output_refine=8, attention_window=4)
    codec = cod.load(weights=path, precision="fp32")
    with torch.no_grad():  # the refinement starts as the identity; make it do something
        codec.model.output_refine[2].weight.normal_(0, 0.05)
    return codec


def _photo(h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(SAMPLE).convert("RGB").resize((w, h), Image.Resampling.BICUBIC))


@pytest.mark.parametrize("dtype,stream", [(torch.float32, None), (torch.bfloat16, None), (torch.bfloat16, torch.float32)], ids=["fp32", "bf16", "mixed"])
def test_fast_form_matches_the_faithful_modules(refine_model, dtype, stream):
    m = refine_model.model
    img = _photo(96, 160)  # index grid 6 x 10: windows of 4 with replicate padding
    x = image_to_tensor(img)
    ref, fast = FaithfulCoDLite(m), FastCoDLite(m, PrecisionPlan("t", False, dtype, dtype, "test", stream))
    z0, z1 = ref.encode_z(x), fast.encode_z(x)
    rel = ((z1 - z0).norm() / z0.norm()).item()
    assert rel < (1e-4 if dtype == torch.float32 else 3e-2), rel
    if stream is not None:  # mixed: the input layer and the output layers in float32, products in bf16
        enc = fast.encoder_module
        assert enc.conv_in.weight.dtype == enc.conv_out.weight.dtype == enc.norm_out.weight.dtype == torch.float32
        assert {p.dtype for n, p in enc.named_parameters() if ".conv" in n or "_w" in n} == {torch.bfloat16}  # blocks' products
        assert {p.dtype for n, p in enc.named_parameters() if "norm1" in n or ".norm." in n} == {torch.float32}  # before a product
        bf = FastCoDLite(m, PrecisionPlan("t", False, dtype, dtype, "test")).encode_z(x)
        assert rel < ((bf - z0).norm() / z0.norm()).item()  # closer to fp32 than the all-bf16 encoder
    idx = ref.indices(z0)
    if dtype == torch.float32:
        assert (fast.indices(z1) == idx).float().mean() >= 0.99
    c0, c1 = ref.condition(idx, 6, 10), fast.condition(idx, 6, 10)
    x0 = ref.pixels(ref.trunk(c0), c0)
    x1 = fast.pixels(fast.trunk(c1), c1)
    with torch.inference_mode():
        want = m.decode_one_step(m.condition.decode(idx, 6, 10))
    assert torch.equal(x0, want)  # the faithful engine is the model's own computation
    err = (x1 - x0).abs().max().item()
    assert err < (1e-4 if dtype == torch.float32 else 0.1), err


def test_fast_band_rows_match_whole(refine_model):
    """Pixel rows computed in bands (with a token row of context for the refinement) equal
    the whole image's rows."""
    fast = FastCoDLite(refine_model.model, PrecisionPlan("t", False, torch.float32, torch.float32, "test"))
    idx = torch.randint(0, 256, (1, 60))
    c = fast.condition(idx, 6, 10)
    s = fast.trunk(c)
    whole = fast.pixels(s, c)
    band = fast.pixels(s, c, (1, 5))  # token rows 1..4, context rows 1 and 4 dropped below
    torch.testing.assert_close(band[:, :, 16:48], whole[:, :, 32:64], rtol=1e-5, atol=1e-5)


def test_compiled_form_traces_and_agrees(refine_model, monkeypatch):
    """compile=True goes through torch.compile (here with the eager backend: the CPU
    inductor would take minutes); the result equals the uncompiled fast form."""
    real = torch.compile
    calls = []

    def eager_compile(fn, **kw):
        calls.append(kw)
        return real(fn, backend="eager", dynamic=False)

    monkeypatch.setattr(torch, "compile", eager_compile)
    plan = PrecisionPlan("t", False, torch.float32, torch.float32, "test")
    plain, comp = FastCoDLite(refine_model.model, plan), FastCoDLite(refine_model.model, plan, compile=True)
    x = image_to_tensor(_photo(64, 96))
    torch.testing.assert_close(comp.encode_z(x), plain.encode_z(x))
    idx = plain.indices(plain.encode_z(x))
    c = comp.condition(idx, 4, 6)
    torch.testing.assert_close(comp.pixels(comp.trunk(c), c), plain.pixels(plain.trunk(c), c))
    assert len(calls) == 4  # encoder, condition decoder, DiCo blocks, pixel chunk


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda p: p.stem)
def test_accuracy_budget_of_the_fast_path(weights):
    """Issue 16's budget on the shipped (trained) models: the fast decode of a file is within
    40 dB PSNR of the fp32 decode, the fast encoder picks the fp32 index at >= 99% of
    positions, and a file the fast path writes decodes with the fp32 path (docs/speed.md has
    the figures, and what a bf16 encoder would cost)."""
    img = _photo(256, 384)
    ref = cod.load(weights=weights, precision="fp32")
    fast = cod.load(weights=weights, precision="fast")
    data32, data = ref.compress(img), fast.compress(img)
    assert (ref.parse(data32)[0] == fast.parse(data)[0]).mean() >= 0.99
    assert psnr(np.asarray(fast.decompress(data32)), np.asarray(ref.decompress(data32))) >= 40.0
    assert np.asarray(ref.decompress(data)).shape == img.shape


def test_codec_precision_and_errors(tiny_weights):
    codec = cod.load(weights=tiny_weights["0.0312"])
    assert codec.precision == "fast" and not codec.plan.faithful
    assert isinstance(codec.engine, FastCoDLite)
    codec.precision = "fp32"
    assert isinstance(codec.engine, FaithfulCoDLite)
    with pytest.raises(CodError, match="unknown precision"):
        cod.load(weights=tiny_weights["0.0312"], precision="fp8")


def test_exact_fp32_turns_tf32_off_on_gpus_only():
    """The fp32 encoder must not run TF32 convolutions on a GPU (cuDNN's default): the flag is
    off inside exact_fp32 for a CUDA device and restored after (no GPU needed to check)."""
    before = torch.backends.cudnn.allow_tf32
    with inference.exact_fp32(torch.device("cuda")):
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 == before
    with inference.exact_fp32(torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32 == before
