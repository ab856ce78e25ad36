"""Fast inference of CoD-Lite (issue 16): the precision rule and the network's inference form.

    plan = resolve_precision("fast", device)     # what runs where, chosen at run time
    fast = FastCoDLite(model, plan)              # the same weights, rearranged for speed
    z = fast.encode_z(x01)                       # encoder output, float32
    cond = fast.condition(indices, h, w)         # condition map at H/16
    s = fast.trunk(cond)                         # DiCo blocks
    x = fast.pixels(s, cond)                     # per-pixel head (+ refinement): [-1, 1], float32

``fp32`` is the faithful path (the network's own modules, float32, what the conformance
vectors record); it never comes here. ``fast`` keeps the same arithmetic up to rounding:

* **memory layout**: convolutions run channels-last (oneDNN's native layout: no reorder of
  every activation), the DiCo blocks and the pixel head on (tokens, channels) matrices;
* **folded constants** (exact algebra, CoD-Lite spec §2.8): the t = 0 modulation of each DiCo
  block becomes the weight and bias of its LayerNorm and the gates scale conv3 / conv5; the
  channel attention's 1x1 conv on a 1x1 map is a matrix-vector product; with x_t = 0 the patch
  stem is a 1x1 conv of the condition, and the pixel embedder, the DCT positions and the
  head's input projection are one linear map of the condition token;
* **precision**: bfloat16 compute where the hardware multiplies it natively (CUDA, AVX-512 BF16
  or AMX CPUs), float32 elsewhere (AVX2: emulated bf16 is slower than fp32). The encoder's
  precision is chosen separately (:func:`resolve_precision`): its output is quantised, and a
  bf16 encoder moves a few near-tied indices (docs/speed.md gives the measured figures).

Large maps are processed in row chunks (:data:`TOKEN_CHUNK`): the MLP's 4x-wide activations
and the per-pixel head never exist for the whole image at once.
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cod.errors import CodError
from cod.models.condition import nearest_codes
from cod.models.lite import CoDLite
from cod.nn.conv_blocks import AttnBlock, Downsample, ResnetBlock
from cod.zoo import PRECISIONS

# rows of the token matrix per chunk in the DiCo MLP and the per-pixel head (CPU; 8x on a
# GPU). A pixel-head chunk of 512 tokens (131072 pixels) works in ~100 MB at bf16: few enough
# operators that a loaded machine does not pay its scheduling cost per operator (64-token
# chunks decoded 720x480 2x slower there), small enough for the memory budget.
TOKEN_CHUNK = 4096
PIXEL_TOKEN_CHUNK = 512


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which bf16 products are emulated
_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX tiles), and oneDNN is
    allowed to use it (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA`` not capped below that)."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap in _ISAS_WITHOUT_BF16:
        return False
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(f()) for f in checks if f is not None)


@dataclass(frozen=True)
class PrecisionPlan:
    """What a precision setting means on one device: the faithful float32 modules, or the fast
    inference form with the encoder's and the decoder's compute dtypes."""

    requested: str
    faithful: bool
    encoder_dtype: torch.dtype  # the encoder's convolutions and attention products
    decoder_dtype: torch.dtype
    reason: str
    #: the encoder's input layer, GroupNorms and residual stream (``None``: encoder_dtype).
    #: float32 with bf16 products is the "mixed" encoder (ENCODER_PRECISIONS)
    encoder_stream_dtype: torch.dtype | None = None

    @property
    def encoder_stream(self) -> torch.dtype:
        return self.encoder_stream_dtype or self.encoder_dtype

    @property
    def encoder_mixed(self) -> bool:
        return self.encoder_stream != self.encoder_dtype

    def describe(self) -> str:
        if self.faithful:
            return "fp32 (faithful)"
        name = {torch.float32: "fp32", torch.bfloat16: "bf16"}
        enc = "mixed (bf16 products, fp32 input layer and stream)" if self.encoder_mixed else name[self.encoder_dtype]
        return f"fast: encoder {enc}, decoder {name[self.decoder_dtype]} ({self.reason})"


#: encoder precisions (resolve_precision's ``encoder``): ``mixed`` runs the convolutions and
#: attention products in bf16 but keeps the input layer, the GroupNorms and the residual
#: stream in float32. Rounding the image itself to bf16 moved most of the indices a bf16
#: encoder changes (docs/speed.md): the shipped models keep >= 99 % of their fp32 indices.
ENCODER_PRECISIONS: tuple[str, ...] = ("fp32", "mixed", "bf16")


def resolve_precision(precision: str, device: torch.device | str = "cpu", encoder: str | None = None) -> PrecisionPlan:
    """The precision rule, decided at run time.

    ``fp32``: the faithful modules. ``bf16``: the fast form in bfloat16 everywhere (slow on CPUs
    without native bf16, but allowed). ``fast``: the decoder in bfloat16 on CUDA and on CPUs
    with native bf16, float32 elsewhere; the encoder, whose output is quantised, ``mixed``
    (ENCODER_PRECISIONS) on CPUs with native bf16 and float32 elsewhere (on CUDA: not yet
    measured there). ``encoder=`` one of ENCODER_PRECISIONS overrides; docs/speed.md gives
    what each costs in same-index agreement.
    """
    dev = torch.device(device)
    if precision not in PRECISIONS:
        raise CodError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if encoder not in (None, *ENCODER_PRECISIONS):
        raise CodError(f"unknown encoder precision {encoder!r} (choose from {', '.join(ENCODER_PRECISIONS)})")
    if precision == "fp32":
        return PrecisionPlan("fp32", True, torch.float32, torch.float32, "faithful")
    if precision == "bf16":
        dec, reason = torch.bfloat16, "bf16 asked for"
    elif dev.type == "cuda":
        dec, reason = torch.bfloat16, "CUDA"
    elif cpu_native_bf16():
        dec, reason = torch.bfloat16, "CPU with native bf16"
    else:
        dec, reason = torch.float32, "CPU without native bf16"
    if encoder is None:
        encoder = "bf16" if precision == "bf16" else "mixed" if dev.type == "cpu" and dec == torch.bfloat16 else "fp32"
    enc = torch.float32 if encoder == "fp32" else torch.bfloat16
    return PrecisionPlan(precision, False, enc, dec, reason, torch.float32 if encoder == "mixed" else None)


def exact_fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """float32 convolutions without TF32 on a GPU (cuDNN allows TF32 by default, which moves
    near-tied encoder indices); nothing on a CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False)


# --------------------------------------------------------------------------- the fast form
def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (H*W, C), free for a channels-last map."""
    return x[0].permute(1, 2, 0).reshape(-1, x.shape[1])


def _grid(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(H*W, C) -> (1, C, H, W) channels-last view."""
    return t.view(1, h, w, -1).permute(0, 3, 1, 2)


@dataclass
class _DiCo:
    """One DiCo block with its t = 0 modulation folded in (float64 algebra, then cast)."""

    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    w1: torch.Tensor
    b1: torch.Tensor
    dw_w: torch.Tensor
    dw_b: torch.Tensor
    ca_w: torch.Tensor
    ca_b: torch.Tensor
    w3: torch.Tensor
    b3: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor
    w4: torch.Tensor
    b4: torch.Tensor
    w5: torch.Tensor
    b5: torch.Tensor

    @classmethod
    def fold(cls, block: nn.Module, dtype: torch.dtype, device: torch.device) -> "_DiCo":
        if block.modulation is None:
            raise CodError("the fast form needs the t = 0 modulation folded (CoDLite.fold_time_modulation)")
        shift1, scale1, gate1, shift2, scale2, gate2 = block.modulation.double().unbind(0)

        def w2d(conv: nn.Conv2d) -> torch.Tensor:
            return conv.weight.double().flatten(1)

        t = {
            "ln1_w": 1 + scale1, "ln1_b": shift1, "w1": w2d(block.conv1), "b1": block.conv1.bias.double(),
            "dw_w": block.conv2.weight.double(), "dw_b": block.conv2.bias.double(),
            "ca_w": w2d(block.ca[1]), "ca_b": block.ca[1].bias.double(),
            "w3": gate1[:, None] * w2d(block.conv3), "b3": gate1 * block.conv3.bias.double(),
            "ln2_w": 1 + scale2, "ln2_b": shift2, "w4": w2d(block.conv4), "b4": block.conv4.bias.double(),
            "w5": gate2[:, None] * w2d(block.conv5), "b5": gate2 * block.conv5.bias.double(),
        }
        t = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in t.items()}
        t["dw_w"] = _cl(t["dw_w"])
        return cls(**t)

    def __call__(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: (h*w, C) tokens, updated in place and returned."""
        c = x.shape[1]
        a = F.linear(F.layer_norm(x, (c,), self.ln1_w, self.ln1_b, 1e-6), self.w1, self.b1)
        a = _tokens(F.conv2d(_grid(a, h, w), self.dw_w, self.dw_b, padding=1, groups=c))
        a = F.gelu(a)
        gate = torch.sigmoid(F.linear(a.float().mean(0).to(a.dtype), self.ca_w, self.ca_b))
        x.add_(F.linear(a.mul_(gate), self.w3, self.b3))
        for lo in range(0, x.shape[0], TOKEN_CHUNK):
            xs = x[lo : lo + TOKEN_CHUNK]
            m = F.gelu(F.linear(F.layer_norm(xs, (c,), self.ln2_w, self.ln2_b, 1e-6), self.w4, self.b4))
            xs.add_(F.linear(m, self.w5, self.b5))
        return x


class FastCoDLite:
    """The inference form of a :class:`CoDLite` (module docstring): same weights, folded and
    cast once, the encoder's part and the decoder's part each on first use. Decoding assumes
    the codec's x_t = 0 (no noise), as ``decode_one_step``."""

    def __init__(self, model: CoDLite, plan: PrecisionPlan, device: torch.device | str = "cpu", compile: bool = False):
        if plan.faithful:
            raise ValueError("the faithful plan runs the model's own modules")
        if not model.time_folded:
            raise CodError("the fast form needs the t = 0 modulation folded (CoDLite.fold_time_modulation)")
        self.model = model
        self.device = torch.device(device)
        self.plan = plan
        self.enc_dtype, self.dtype = plan.encoder_dtype, plan.decoder_dtype
        self.patch_size = model.patch_size
        self.hidden = model.hidden_size
        self.has_refine = model.output_refine is not None
        self.encoder_channels = model.condition.encoder.conv_in.out_channels
        self.latent_channels = model.condition.quantizer.codebook.weight.shape[1]
        self.codebook = model.condition.quantizer.codebook.weight.detach().to(self.device, torch.float32)
        self._encoder: nn.Module | None = None
        self._decoder_built = False
        # torch.compile (inductor; CUDA graphs on a GPU) of the encoder, the condition decoder,
        # the DiCo blocks and one pixel-head chunk: each image size compiles once
        self.compile = compile
        self._trunk_fn = self._trunk
        self._chunk_fn = self._pixel_chunk

    def _compiled(self, fn):
        if not self.compile:
            return fn
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        return torch.compile(fn, mode=mode, dynamic=False)

    # ----------------------------------------------------------------------- folding
    @torch.no_grad()
    def _build_decoder(self) -> None:
        if self._decoder_built:
            return
        model, dd, dev = self.model, self.dtype, self.device
        self._cond_plain = _cl_module(model.condition.decoder, dd, dev)
        # patch stem on x_t = 0: proj1(0) = 0 (no bias), so proj2 sees only the condition
        pe = model.patch_embedder
        self.stem_w = pe.proj2.weight.flatten(1)[:, pe.proj1.out_channels :].to(dev, dd).contiguous()
        self.stem_b = pe.proj2.bias.to(dev, dd)
        self.blocks = [_DiCo.fold(b, dd, dev) for b in model.blocks]
        p2, kx, cin = self.patch_size**2, model.hidden_size_x, 3
        emb = model.pixel_embedder
        we, be = emb.embedder[0].weight.double(), emb.embedder[0].bias.double()  # (kx, cin + kx + F*F)
        dct = emb.dct_features(self.patch_size, torch.device("cpu"), torch.float64)  # (p2, F*F)
        head = model.pixel_head
        wi, bi = head.input_proj.weight.double(), head.input_proj.bias.double()
        a = wi @ we[:, cin : cin + kx]  # the embedder's condition columns, then input_proj
        const = (wi @ (we[:, cin + kx :] @ dct.t() + be[:, None])).t() + bi  # (p2, kx): DCT positions + biases
        wx = model.pixel_condition_proj.weight.double().flatten(1).view(kx, p2, -1)  # row k*p2 + pix
        bx = model.pixel_condition_proj.bias.double().view(kx, p2)
        # the head's input for pixel pix of a token: M[pix] @ cond_token + mb[pix], rows pix*kx + j
        self.px_w = torch.einsum("jk,kpd->pjd", a, wx).reshape(p2 * kx, -1).to(dev, dd).contiguous()
        self.px_b = (torch.einsum("jk,kp->pj", a, bx) + const).reshape(-1).to(dev, dd)
        self.y_w, self.y_b = head.cond_embed.weight.to(dev, dd).contiguous(), head.cond_embed.bias.to(dev, dd)
        self.res = []
        for blk in head.res_blocks:
            ada_b = blk.adaLN_modulation[1].bias.double().clone()
            ada_b[kx : 2 * kx] += 1.0  # the GEMM gives 1 + scale directly
            ts = (blk.adaLN_modulation[1].weight, ada_b, blk.in_ln.weight, blk.in_ln.bias, blk.mlp[0].weight, blk.mlp[0].bias, blk.mlp[2].weight, blk.mlp[2].bias)
            self.res.append(tuple(t.detach().to(dev, dd).contiguous() for t in ts))
        fl = model.final_layer
        self.rms_w, self.rms_eps = fl.norm.weight.detach().to(dev, torch.float32), fl.norm.eps
        self.out_w, self.out_b = fl.linear.weight.detach().to(dev, dd), fl.linear.bias.detach().to(dev, dd)
        self.kx = kx
        self.refine = _cl_module(model.output_refine, dd, dev) if model.output_refine is not None else None
        self.cond_decoder = self._compiled(self._cond_plain)
        self._trunk_fn = self._compiled(self._trunk)
        self._chunk_fn = self._compiled(self._pixel_chunk)
        self._decoder_built = True

    # ----------------------------------------------------------------------- encoder
    @property
    def encoder_module(self) -> nn.Module:
        """The encoder's module (its GroupNorms are shared across tiles: cod.tiling)."""
        if self._encoder is None:
            with torch.no_grad():
                enc = self.model.condition.encoder
                if self.plan.encoder_mixed:
                    self._encoder_plain = _mixed_encoder(enc, self.enc_dtype, self.plan.encoder_stream, self.device)
                else:
                    self._encoder_plain = _cl_module(enc, self.enc_dtype, self.device)
                self._encoder = self._compiled(self._encoder_plain)
        return self._encoder_plain

    @torch.inference_mode()
    def encode_z(self, x01: torch.Tensor, tile: bool = False) -> torch.Tensor:
        """Image in [0, 1], (1, 3, H, W) float32 -> encoder output z, float32 (1, C, h, w)."""
        plain = self.encoder_module  # built on first use
        with exact_fp32(self.device):
            z = (plain if tile else self._encoder)(_cl(x01.to(self.device, self.plan.encoder_stream)))
        return self._fresh(z.float().contiguous())

    @torch.inference_mode()
    def indices(self, z: torch.Tensor) -> torch.Tensor:
        return nearest_indices(z, self.codebook)

    # ----------------------------------------------------------------------- decoder
    @property
    def condition_module(self) -> nn.Module:
        """The condition decoder's module (GroupNorms shared across tiles: cod.tiling)."""
        self._build_decoder()
        return self._cond_plain

    @torch.inference_mode()
    def condition(self, indices: torch.Tensor, h: int, w: int, tile: bool = False) -> torch.Tensor:
        """Indices (1, h*w) -> condition map (1, C, H/16, W/16), channels-last, compute dtype.
        ``tile``: a tile of a larger map (the uncompiled module, whose GroupNorms the tiles share)."""
        self._build_decoder()
        rows = F.embedding(indices.to(self.device).view(-1), self.codebook)  # exact fp32 rows
        return self._fresh((self._cond_plain if tile else self.cond_decoder)(_cl(_grid(rows.to(self.dtype), h, w))))

    def _fresh(self, t: torch.Tensor) -> torch.Tensor:
        """Outputs of CUDA graphs live in a pool that the next replay reuses: keep a copy."""
        return t.clone() if self.compile and self.device.type == "cuda" else t

    @torch.inference_mode()
    def trunk(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition map -> DiCo output tokens (H/16 * W/16, C)."""
        self._build_decoder()
        return self._fresh(self._trunk_fn(_cl(cond.to(self.dtype))))

    def _trunk(self, cond: torch.Tensor) -> torch.Tensor:
        _, _, h, w = cond.shape
        s = F.linear(_tokens(cond), self.stem_w, self.stem_b)
        for blk in self.blocks:
            s = blk(s, h, w)
        return s

    @torch.inference_mode()
    def pixels(self, s: torch.Tensor, cond: torch.Tensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """DiCo tokens + condition map -> image rows (float32 (1, 3, 16*r, W), [-1, 1] before
        clipping) for token rows ``rows`` (default all), refined (when the model has the
        refinement) within the rows: a caller cutting bands gives them a row of context."""
        self._build_decoder()
        _, _, th, tw = cond.shape
        r0, r1 = rows or (0, th)
        p2 = self.patch_size**2
        ct = _tokens(_cl(cond.to(self.dtype)))[r0 * tw : r1 * tw]
        st = s[r0 * tw : r1 * tw]
        out = torch.empty(st.shape[0], p2, 3, dtype=torch.float32, device=self.device)
        chunk = PIXEL_TOKEN_CHUNK if self.device.type == "cpu" else 8 * PIXEL_TOKEN_CHUNK
        for lo in range(0, st.shape[0], chunk):
            hi = min(st.shape[0], lo + chunk)
            out[lo:hi] = self._chunk_fn(ct[lo:hi], st[lo:hi])
        p = self.patch_size
        img = out.view(r1 - r0, tw, p, p, 3).permute(4, 0, 2, 1, 3).reshape(1, 3, (r1 - r0) * p, tw * p)
        if self.refine is not None:
            img = img + self.refine(_cl(img.to(self.dtype))).float()
        return img


    def _pixel_chunk(self, ct: torch.Tensor, st: torch.Tensor) -> torch.Tensor:
        """Condition tokens + DiCo tokens (n, C) -> (n, P*P, 3) float32 pixel values."""
        p2, kx = self.patch_size**2, self.kx
        n = ct.shape[0] * p2
        x = F.linear(ct, self.px_w, self.px_b).view(n, kx)
        y = F.silu(F.linear(st, self.y_w, self.y_b).view(n, kx))
        for aw, ab, lw, lb, w1, b1, w2, b2 in self.res:
            shift, scale, gate = F.linear(y, aw, ab).chunk(3, dim=1)
            a = torch.addcmul(shift, F.layer_norm(x, (kx,), lw, lb, 1e-6), scale)
            x = x.addcmul(gate, F.linear(F.silu(F.linear(a, w1, b1)), w2, b2))
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.rms_eps) * self.rms_w
        return F.linear(xf.to(self.dtype), self.out_w, self.out_b).view(ct.shape[0], p2, 3).float()


class FaithfulCoDLite:
    """The faithful float32 path through the network's own modules, with the interface of
    :class:`FastCoDLite`. On one band covering the image it computes exactly what
    ``CoDLite.decode_one_step`` computes (the conformance vectors)."""

    dtype = torch.float32
    enc_dtype = torch.float32

    def __init__(self, model: CoDLite, device: torch.device | str = "cpu"):
        self.model = model
        self.device = torch.device(device)
        self.patch_size = model.patch_size
        self.has_refine = model.output_refine is not None
        self.encoder_channels = model.condition.encoder.conv_in.out_channels
        self.latent_channels = model.condition.quantizer.codebook.weight.shape[1]
        self.hidden = model.hidden_size

    @property
    def encoder_module(self) -> nn.Module:
        return self.model.condition.encoder

    @property
    def condition_module(self) -> nn.Module:
        return self.model.condition.decoder

    @torch.inference_mode()
    def encode_z(self, x01: torch.Tensor, tile: bool = False) -> torch.Tensor:
        with exact_fp32(self.device):
            return self.model.condition.encoder(x01.to(self.device))

    @torch.inference_mode()
    def indices(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.condition.quantizer.indices(z)

    @torch.inference_mode()
    def condition(self, indices: torch.Tensor, h: int, w: int, tile: bool = False) -> torch.Tensor:
        return self.model.condition.decode(indices.to(self.device), h, w)

    @torch.inference_mode()
    def trunk(self, cond: torch.Tensor) -> torch.Tensor:
        """The patch stem on x_t = 0 (its 16x16 conv of zeros, no bias, is exactly zero) and the DiCo blocks."""
        m = self.model
        pe = m.patch_embedder
        zero = cond.new_zeros(cond.shape[0], pe.proj1.out_channels, *cond.shape[2:])
        s = pe.proj2(torch.cat([zero, cond], dim=1))
        for block in m.blocks:
            s = block(s, None)
        return s

    @torch.inference_mode()
    def pixels(self, s: torch.Tensor, cond: torch.Tensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
        m, p = self.model, self.patch_size
        r0, r1 = rows or (0, cond.shape[2])
        if (r0, r1) != (0, cond.shape[2]):
            s, cond = s[:, :, r0:r1], cond[:, :, r0:r1]
        x_t = cond.new_zeros(cond.shape[0], 3, (r1 - r0) * p, cond.shape[3] * p)
        out = m._pixel_decode(x_t, s, cond)
        if m.output_refine is not None:
            out = out + m.output_refine(out)
        return out


class _FastResnet(nn.Module):
    """ResnetBlock with in-place activations and residual (same arithmetic)."""

    def __init__(self, blk: ResnetBlock):
        super().__init__()
        self.norm1, self.conv1, self.norm2, self.conv2, self.nin_shortcut = blk.norm1, blk.conv1, blk.norm2, blk.conv2, blk.nin_shortcut
        self.consumes_input = False  # may the block overwrite its input (_mixed_encoder's chain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the casts are no-ops unless the block is mixed (_mixed_encoder: norm1 and the residual
        # stream x in float32, the convolutions and norm2 in bf16)
        dt = self.conv1.weight.dtype
        h = self.conv1(F.silu(self.norm1(x), inplace=True).to(dt))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x.to(dt)).to(x.dtype)
        if h.dtype == x.dtype:
            return h.add_(x)
        # mixed: the float32 stream takes the bf16 branch in place where the block owns it (a
        # shortcut's output, or an input it may consume): no third map at the memory peak
        return x.add_(h) if self.nin_shortcut is not None or self.consumes_input else torch.add(x, h)


class _FastAttn(nn.Module):
    """AttnBlock on (tokens, channels): q, k, v from one matrix product, windows cut from the
    token grid (replicate padding at the bottom/right, the padded keys in the softmax, as
    AttnBlock), the output projection as a matrix product."""

    def __init__(self, blk: AttnBlock):
        super().__init__()
        self.norm, self.window = blk.norm, blk.window
        with torch.no_grad():
            self.qkv_w = nn.Parameter(torch.cat([m.weight.flatten(1) for m in (blk.q, blk.k, blk.v)]), requires_grad=False)
            self.qkv_b = nn.Parameter(torch.cat([blk.q.bias, blk.k.bias, blk.v.bias]), requires_grad=False)
            self.proj_w = nn.Parameter(blk.proj_out.weight.flatten(1).clone(), requires_grad=False)
            self.proj_b = nn.Parameter(blk.proj_out.bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = F.linear(self.norm(x).to(self.qkv_w.dtype).permute(0, 2, 3, 1), self.qkv_w, self.qkv_b)  # (b, h, w, 3c)
        win = self.window
        if win is None or (h <= win and w <= win):
            q, k, v = qkv.reshape(b, 1, h * w, 3 * c).split(c, dim=-1)
            out = F.scaled_dot_product_attention(q, k, v).view(b, h, w, c)
        else:
            ph, pw = -h % win, -w % win
            if ph or pw:
                qkv = F.pad(qkv.permute(0, 3, 1, 2), (0, pw, 0, ph), mode="replicate").permute(0, 2, 3, 1)
            nh, nw = (h + ph) // win, (w + pw) // win
            t = qkv.reshape(b, nh, win, nw, win, 3 * c).transpose(2, 3).reshape(b * nh * nw, 1, win * win, 3 * c)
            q, k, v = t.split(c, dim=-1)
            out = F.scaled_dot_product_attention(q, k, v).view(b, nh, nw, win, win, c).transpose(2, 3).reshape(b, nh * win, nw * win, c)
            out = out[:, :h, :w]
        y = F.linear(out, self.proj_w, self.proj_b).to(x.dtype).add_(x.permute(0, 2, 3, 1))
        return y.permute(0, 3, 1, 2)


class _ComputeIn(nn.Module):
    """``module`` run in ``dtype`` on an input of another dtype, its output cast back."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.dtype)).to(x.dtype)


def _fast_modules(module: nn.Module) -> nn.Module:
    """Replace every ResnetBlock / AttnBlock inside ``module`` by its fast form (in place)."""
    for name, child in module.named_children():
        if isinstance(child, ResnetBlock):
            setattr(module, name, _FastResnet(child))
        elif isinstance(child, AttnBlock):
            setattr(module, name, _FastAttn(child))
        else:
            _fast_modules(child)
    return module


def _cl_module(module: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """A float32 module's copy in the fast form: ``dtype``, channels-last, fused blocks."""
    m = _fast_modules(copy.deepcopy(module))
    return m.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval().requires_grad_(False)


def _mixed_encoder(encoder: nn.Module, dtype: torch.dtype, stream: torch.dtype, device: torch.device) -> nn.Module:
    """The encoder's fast form with its products in ``dtype`` and, in ``stream``, the input
    layer (conv_in sees the exact image), every GroupNorm before a product, the residual
    stream and the output layers (ENCODER_PRECISIONS "mixed")."""
    m = _cl_module(encoder, stream, device)
    cl = torch.channels_last
    for mod in m.modules():
        if isinstance(mod, _FastResnet):
            for name in ("conv1", "conv2", "norm2", "nin_shortcut"):
                if getattr(mod, name) is not None:
                    setattr(mod, name, getattr(mod, name).to(dtype=dtype, memory_format=cl))
            mod.consumes_input = True  # each block's input is the previous layer's fresh output
        elif isinstance(mod, _FastAttn):
            mod.to(dtype)
            mod.norm.to(stream)
        elif isinstance(mod, Downsample):
            mod.conv = _ComputeIn(mod.conv.to(dtype=dtype, memory_format=cl), dtype)
    return m


def nearest_indices(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) latent -> (1, h*w) nearest-code indices (cod.models.condition.nearest_codes)."""
    b, c, h, w = z.shape
    return nearest_codes(z.permute(0, 2, 3, 1).reshape(-1, c), codebook)[0].view(b, h * w)


__all__ = ["PRECISIONS", "ENCODER_PRECISIONS", "PrecisionPlan", "resolve_precision", "cpu_native_bf16", "FastCoDLite", "FaithfulCoDLite", "nearest_indices", "TOKEN_CHUNK"]
