"""Image arrays <-> tensors for the codecs: the exact conversions and the padding rule.

The one place that says how uint8 pixels become the network's float input (u8/255, as
``to_tensor``), how its output becomes uint8 again (trunc(clip((x+1)*127.5 + 0.5))), and how
an image is padded to the model's multiple at the bottom/right.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cod.zoo import PAD_MODES  # the one list of padding modes


def image_to_tensor(arr: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 -> (1,3,H,W) float32 in [0,1] (exactly u8/255, as to_tensor)."""
    t = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    return t.to(device).permute(2, 0, 1)[None].float().div(255.0)


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1,3,H,W) in [-1,1] -> HxWx3 uint8: trunc(clip((x+1)*127.5 + 0.5, 0, 255)) in float32."""
    u8 = ((x.float() + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
    return u8[0].permute(1, 2, 0).cpu().numpy()


def pad_image(x: torch.Tensor, multiple: int, mode: str = "replicate") -> torch.Tensor:
    """Pad (B,C,H,W) at the bottom/right up to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflection needs more pixels than the pad; fall back
    return F.pad(x, (0, pw, 0, ph), mode=mode, value=0.0) if mode == "constant" else F.pad(x, (0, pw, 0, ph), mode=mode)


def pad_array(arr: np.ndarray, height: int, width: int, mode: str = "replicate") -> np.ndarray:
    """Pad an HxWx3 uint8 array at the bottom/right to ``height`` x ``width`` with the same
    values :func:`pad_image` gives the float image (for tiles cut from a padded image)."""
    h, w = arr.shape[:2]
    ph, pw = height - h, width - w
    if not ph and not pw:
        return arr
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    np_mode = {"replicate": "edge", "reflect": "reflect", "constant": "constant"}[mode]
    return np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode=np_mode)


__all__ = ["PAD_MODES", "image_to_tensor", "tensor_to_uint8", "pad_image", "pad_array"]
