"""Training images: folders (recursive) or file lists, random crops with flips.

Unreadable or too-small images are skipped and counted, never a crash: a fast header
check at start-up drops files that cannot be opened or are smaller than the crop, and an
image that fails to decode later is replaced by another one (and counted).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cod.errors import CodError
from cod.image_io import EVALUATION_SETS, evaluation_image, to_rgb_array

TRAIN_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def find_images(sources: Sequence[str | Path]) -> list[Path]:
    """Images under folders (recursive, png/jpg/webp) and in list files (one path a line)."""
    files: list[Path] = []
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TRAIN_EXTENSIONS))
        elif p.is_file() and p.suffix.lower() in (".txt", ".lst"):
            base = p.parent
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    files.append(q if q.is_absolute() else base / q)
        elif p.is_file():
            files.append(p)
        else:
            raise CodError(f"training data source not found: {p}")
    return files


@dataclass
class SkipStats:
    unreadable: list[str] = field(default_factory=list)
    too_small: list[str] = field(default_factory=list)
    failed_at_load: int = 0

    def summary(self) -> str:
        return f"{len(self.unreadable)} unreadable, {len(self.too_small)} smaller than the crop, {self.failed_at_load} failed while training"


class RandomCropDataset(Dataset):
    """Random ``size``x``size`` crops in [0, 1] (C,H,W), horizontal flips with p=0.5.

    ``length`` sets the number of crops per epoch (default: one per image).
    ``scale`` = (lo, hi): each crop first picks a scale s in [lo, hi] (uniform in log s), cuts
    a ``size/s`` square and resizes it to ``size`` (antialiased), so large photos are also seen
    at the detail level of smaller ones. ``cache`` keeps decoded images in memory (per process).
    """

    def __init__(self, sources: Sequence[str | Path], size: int, flip: bool = True, length: int | None = None, exclude: Sequence[str] = EVALUATION_SETS, seed: int = 0, scale: tuple[float, float] = (1.0, 1.0), cache: bool = False):
        self.size, self.flip, self.seed = size, flip, seed
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi <= 1:
            raise CodError(f"data.scale must satisfy 0 < lo <= hi <= 1, got {list(scale)}")
        self.scale = (lo, hi)
        self.cache: dict[Path, np.ndarray] | None = {} if cache else None
        self.stats = SkipStats()
        self.files: list[Path] = []
        for f in find_images(sources):
            if evaluation_image(f, exclude):
                raise CodError(f"{f}: refusing to train on an evaluation set ({'/'.join(exclude)}, kodim* files)")
            try:
                with Image.open(f) as im:
                    w, h = im.size
            except Exception:  # noqa: BLE001 - any unreadable file is skipped
                self.stats.unreadable.append(str(f))
                continue
            if min(w, h) < size:
                self.stats.too_small.append(str(f))
                continue
            self.files.append(f)
        if not self.files:
            raise CodError(f"no usable training images ({self.stats.summary()}) in {', '.join(map(str, sources))}")
        self.length = length or len(self.files)

    def __len__(self) -> int:
        return self.length

    def _load(self, path: Path) -> np.ndarray:
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        with Image.open(path) as im:
            im.load()
            arr = to_rgb_array(im, path.name)
        if self.cache is not None:
            self.cache[path] = arr
        return arr

    def _file_for(self, index: int) -> Path:
        """Each pass over the files is a fresh permutation, a function of (seed, pass)."""
        n = len(self.files)
        perm = random.Random(f"{self.seed}-{index // n}").sample(range(n), n)
        return self.files[perm[index % n]]

    def __getitem__(self, index: int) -> torch.Tensor:
        """Crop number ``index``: a pure function of (seed, index), so any worker layout and
        any resume point sees the same data."""
        rng = random.Random(f"{self.seed}:{index}")
        for attempt in range(10):
            path = self._file_for(index + attempt * 7919)
            try:
                arr = self._load(path)
            except Exception:  # noqa: BLE001
                self.stats.failed_at_load += 1
                continue
            h, w = arr.shape[:2]
            if min(h, w) < self.size:
                self.stats.failed_at_load += 1
                continue
            lo, hi = self.scale
            s = math.exp(rng.uniform(math.log(lo), math.log(hi))) if lo < hi else lo
            side = min(h, w, max(self.size, round(self.size / s)))
            y, x = rng.randrange(h - side + 1), rng.randrange(w - side + 1)
            crop = arr[y : y + side, x : x + side]
            if side != self.size:
                crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((self.size, self.size), Image.Resampling.BICUBIC, reducing_gap=None))
            if self.flip and rng.random() < 0.5:
                crop = crop[:, ::-1]
            return torch.from_numpy(np.array(crop, copy=True)).permute(2, 0, 1).float().div(255.0)
        raise CodError(f"10 training images in a row failed to load near index {index}")
