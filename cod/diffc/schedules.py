"""DiffC's timestep schedules (the original's), torch-free: the payload format
(:mod:`cod.diffc.payload`) and `cod info` read them without loading a network (spec §11)."""
from __future__ import annotations

from typing import Sequence

T_MAX = 1000  # tau of pure noise

# The original's schedules (downstream/diffc/configs/CoD-{pixel,latent}-cond.yaml).
PIXEL_ENCODING_TIMESTEPS: tuple[int, ...] = (
    972, 949, 929, 897, 869, 834, 805, 780, 751, 726, 704, 688, 670, 648, 627, 608, 591, 578, 561, 546, 530, 520, 510, 498,
    491, 480, 465, 455, 447, 438, 429, 419, 410, 402, 390, 380, 371, 361, 353, 345, 336, 326, 319, 313, 305, 296, 289, 282,
    276, 269, 261, 254, 247, 242, 237, 231, 224, 219, 213, 209, 204, 200, 194, 189, 185, 181, 175, 170, 167, 163, 160, 156,
    153, 149, 146, 143, 139, 135, 132, 129, 125, 121, 118, 116, 113, 110, 107, 104, 101, 99, 96, 94, 92, 90, 87, 85, 82, 80,
    78, 76, 74, 72, 70, 68, 66, 64, 62, 60, 58, 56, 54, 52, 50, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34,
    33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20,
)
LATENT_ENCODING_TIMESTEPS: tuple[int, ...] = PIXEL_ENCODING_TIMESTEPS + tuple(range(19, 1, -1))
DENOISING_TIMESTEPS: tuple[int, ...] = tuple(range(981, 20, -20)) + (10, 5, 0)


def check_schedule(schedule: Sequence[int], finish: bool = False) -> tuple[int, ...]:
    """An encoding schedule is strictly decreasing in 1..999; a finishing schedule strictly
    decreasing in 0..999 and ends at 0."""
    s = tuple(int(v) for v in schedule)
    lo = 0 if finish else 1
    if not s or any(not lo <= v < T_MAX for v in s) or any(a <= b for a, b in zip(s, s[1:])):
        raise ValueError(f"a DiffC {'finishing' if finish else 'encoding'} schedule is strictly decreasing in {lo}..{T_MAX - 1}")
    if finish and s[-1] != 0:
        raise ValueError("a DiffC finishing schedule ends at 0")
    return s


__all__ = ["T_MAX", "PIXEL_ENCODING_TIMESTEPS", "LATENT_ENCODING_TIMESTEPS", "DENOISING_TIMESTEPS", "check_schedule"]
