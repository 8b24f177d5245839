"""Frame-count rules of video VAEs that compress time (Wan's causal VAE: 4n+1 frames -> n+1 latent frames).

A leaf module (imports nothing from the package) so that model configs (:mod:`freelong.models.spec`) can
check a frame count before any backbone module loads.
"""

from __future__ import annotations

TEMPORAL_COMPRESSION = 4


def latent_frame_count(num_frames: int, compression: int = TEMPORAL_COMPRESSION) -> int:
    """Latent frames of a causal video VAE: ``(num_frames - 1) // compression + 1``."""
    return (int(num_frames) - 1) // compression + 1


def check_wan_frames(num_frames: int, compression: int = TEMPORAL_COMPRESSION) -> None:
    """``num_frames`` must be ``compression*n + 1``; else a ValueError naming the nearest valid counts."""
    n = int(num_frames)
    if n >= 1 and (n - 1) % compression == 0:
        return
    below = max(1, (n - 1) // compression * compression + 1)
    above = below + compression if below < n else below
    nearest = sorted({below, above} - {n})
    raise ValueError(
        f"num_frames={n} is not {compression}n+1 (the Wan VAE compresses time {compression}x causally); "
        f"nearest valid: {' or '.join(map(str, nearest))}"
    )
