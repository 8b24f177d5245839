"""What the diffusers video DiT backbones share: a transformer over patchified latents, a VAE that compresses time.

Wan, CogVideoX and HunyuanVideo take ``4n + 1`` frames (their VAEs keep the first frame and compress every
4 after it), and heights/widths that are multiples of the VAE factor times the spatial patch.
"""

from __future__ import annotations

from .base import Backbone
from .frames import check_wan_frames, latent_frame_count


class VideoDiTBackbone(Backbone):
    """A :class:`Backbone` whose denoiser (``unet``, also ``transformer``) is a diffusers video DiT."""

    temporal_compression: int  # set by each family (4 for Wan2.1, CogVideoX, HunyuanVideo)

    @property
    def transformer(self):
        return self.unet

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def spatial_patch(self) -> int:
        """The transformer's spatial patch size (``patch_size``: an int, or Wan's ``(t, h, w)``)."""
        patch = self.unet.config.patch_size
        return int(patch[1] if isinstance(patch, (list, tuple)) else patch)

    def latent_frames(self, num_frames: int) -> int:
        return latent_frame_count(num_frames, self.temporal_compression)

    def check_shape(self, num_frames: int, height: int, width: int) -> None:
        check_wan_frames(num_frames, self.temporal_compression)
        multiple = self.vae_scale_factor * self.spatial_patch()
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple} for {self.name}, got {height}x{width}")
