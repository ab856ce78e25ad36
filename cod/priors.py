"""`cod fit-prior`: fit a model's index prior on training images and store it in its weights.

The model encodes every training image (at its own size, sides capped at ``max_side`` with an
antialiased downscale), :func:`cod.entropy.fit_prior` fits the static and context tables on
the index grids, and the output file is the input's network and config plus the prior's
tensors (``entropy_prior.*``). Any family works, official checkpoints too (converted on the way).
Evaluation sets are refused, as for training (a folder named ``kodak``), and Kodak's own file
names (``kodim*``) wherever they are.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cod.checkpoint import save_weights
from cod.entropy import fit_prior
from cod.errors import CodError, UsageError



def training_images(sources: Sequence[str | Path]) -> list[Path]:
    """The image files under ``sources`` (folders, recursive), refusing evaluation sets."""
    from cod.image_io import EVALUATION_SETS, evaluation_image, list_images

    files = []
    for src in sources:
        p = Path(src)
        if not p.exists():
            raise CodError(f"{p}: no such file or folder")
        files += list_images([p])
    for f in files:
        if evaluation_image(f):
            raise UsageError(f"{f}: refusing to fit a prior on an evaluation set ({', '.join(EVALUATION_SETS)}, kodim* files)")
    if not files:
        raise CodError(f"no images found in {', '.join(map(str, sources))}")
    return files


def index_grids(codec: Any, files: Sequence[Path], max_side: int | None = 2048, progress: Callable | None = None) -> list[np.ndarray]:
    """The (h, w) index grid of every image under ``codec`` (unreadable files are skipped)."""
    from PIL import Image

    from cod.image_io import read_image

    grids = []
    for f in progress(files) if progress else files:
        try:
            arr = read_image(f)
        except CodError:
            continue
        h, w = arr.shape[:2]
        if max_side and max(h, w) > max_side:
            s = max_side / max(h, w)
            arr = np.asarray(Image.fromarray(arr).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS))
        idx, H, W = codec.encode(arr)
        grids.append(np.asarray(idx, dtype=np.int64).reshape(codec.grid(H, W)))
    if not grids:
        raise CodError("none of the images could be read")
    return grids


def fit_model_prior(
    weights: str | Path,
    sources: Sequence[str | Path],
    output: str | Path,
    groups: int = 16,
    max_side: int | None = 2048,
    device: str = "cpu",
    config_yaml: str | Path | None = None,
    unsafe_pickle: bool = False,
    progress: Callable | None = None,
) -> dict[str, Any]:
    """Fit and store the prior; returns a report (images, indices, held-out bits, seconds)."""
    from cod.checkpoint import read_weights
    from cod.entropy import split_prior
    from cod.families import load, official_family
    from cod.official import is_official_checkpoint, official_yaml_for

    t0 = time.perf_counter()
    files = training_images(sources)
    codec = load(weights=weights, device=device, config_yaml=config_yaml, unsafe_pickle=unsafe_pickle, entropy=False)
    grids = index_grids(codec, files, max_side, progress)
    prior, report = fit_prior(grids, codec.bits, groups=groups)
    # the stored tensors as they are in the file (dtype, unfolded), any earlier prior replaced
    if is_official_checkpoint(Path(weights)):
        yaml_path = official_yaml_for(Path(weights), config_yaml)
        config, state, _ = official_family(yaml_path).official.convert(Path(weights), yaml_path, unsafe_pickle=unsafe_pickle)
    else:
        config, state = read_weights(weights)
        split_prior(state)
    save_weights(output, {**state, **prior.to_tensors()}, config)
    report.update(images=len(grids), bits=codec.bits, prior_tag=f"{prior.tag:04x}", seconds=round(time.perf_counter() - t0, 1), output=str(output))
    return report
