"""FreePCA (Tan et al., CVPR 2025; official code JosephTiTan/FreePCA, ``lvdm/modules/attention.py``).

Every temporal attention computes two branches over the same q, k, v:

- the *global* branch: attention over all ``T`` frames with the queries scaled by ``sqrt(log T / log window)``
  (attention-entropy scaling; the release writes ``log(64, 16)``);
- the *local* branch: attention inside windows of ``window`` frames every ``stride`` frames.

For window number ``w > 0`` and diffusion timesteps ``t > timestep_threshold``, the window's local output ``L`` and
the global output ``G`` on the same frames are both viewed as a matrix with one row per (spatial position, channel)
of a sample (heads merged) and one column per frame, centred per row, and projected onto the eigenvectors ``V`` of
the covariance of the centred global matrix (principal components over frames). Per component the cosine
similarity of the local and global scores (over all rows) ranks the components; the ``min(w, num_components)``
most similar ones ("consistent appearance") take the global scores, the others ("motion") the local ones, and the
fused scores go back through ``V^T`` plus the global temporal mean. The windows' outputs are averaged per frame.

The initial noise reuses the temporal mean of the first block of ``window`` frames in every later block
(:func:`mean_reuse_noise`).

Ours runs at any ``T >= window`` (the release hard-codes 64 frames: any other length fails or zeroes frames) and at
any batch: the PCA pools the rows of one sample at a time, so a batched classifier-free-guidance call gives each
guidance branch its own PCA, as the release's two separate forwards do (the release crashes on a batch > 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from freelong.attention.context import PositionBias, TemporalAttentionContext, require_frame_bias
from freelong.attention.kernels import add_positions, block_bias, full_bias
from freelong.attention.processor import TemporalAttnProcessor
from freelong.attention.windows import check_window_stride, frame_index, sliding_windows
from freelong.methods import Method, register_method

UNET_FAMILIES = ("videocrafter2", "lavie", "animatediff", "modelscope")


def mean_reuse_noise(
    shape: tuple[int, ...], block: int = 16, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """FreePCA's initial noise for latents ``(B, C, T, H, W)``: i.i.d. Gaussian, then, block after block of
    ``block`` frames, each block's temporal mean replaced by the previous block's (so every block carries the
    first block's per-(c, h, w) temporal mean and keeps its own residual). A ragged last block is treated alike.
    """
    if len(shape) != 5:
        raise ValueError(f"expected a (B, C, T, H, W) shape, got {tuple(shape)}")
    device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    for start in range(block, shape[2], block):
        cur = z[:, :, start : start + block]
        prev_mean = z[:, :, start - block : start].mean(dim=2, keepdim=True)
        z[:, :, start : start + block] = cur - cur.mean(dim=2, keepdim=True) + prev_mean
    return z.to(dtype)


def pca_fuse(local: torch.Tensor, glob: torch.Tensor, keep: int) -> torch.Tensor:
    """FreePCA's fusion of one window: ``local`` and ``glob`` are ``(B, N, W)`` (rows = a sample's positions x
    channels, columns = the window's frames); returns ``(B, N, W)``.

    Per sample: eigenvectors ``V`` of ``Gc^T Gc / (W - 1)`` (``Gc``: ``glob`` centred per row; ``torch.linalg.eig``
    and its real part, as the release), scores ``Lc V`` and ``Gc V``, the ``keep`` components with the largest
    cosine similarity of the two scores take the global scores, the rest the local ones, and the result is
    ``F V^T + mean(glob)``.
    """
    w = local.shape[-1]
    if local.device.type == "meta":  # FLOP/memory estimates: no eigensolver on meta (a W x W problem per window)
        return local.clone()
    lc = local - local.mean(dim=-1, keepdim=True)
    g_mean = glob.mean(dim=-1, keepdim=True)
    gc = glob - g_mean
    cov = gc.transpose(-1, -2) @ gc / (w - 1)
    vecs = torch.linalg.eig(cov)[1].real  # (B, W, W), columns are eigenvectors
    p_local, p_glob = lc @ vecs, gc @ vecs  # (B, N, W)
    cos = torch.nn.functional.cosine_similarity(p_local, p_glob, dim=1)  # (B, W)
    order = torch.argsort(cos, dim=-1, descending=True)
    take_global = torch.zeros_like(cos, dtype=torch.bool).scatter_(1, order[:, :keep], True)  # (B, W)
    fused = torch.where(take_global[:, None, :], p_glob, p_local)
    return fused @ vecs.transpose(-1, -2) + g_mean


class FreePCAProcessor(TemporalAttnProcessor):
    """FreePCA's temporal attention (one token per frame: a UNet's temporal attention)."""

    def __init__(self, window: int = 16, stride: int = 4, num_components: int = 3,
                 timestep_threshold: float = 250.0, entropy_scale: bool = True):
        self.window = window
        self.stride = stride
        self.num_components = num_components
        self.timestep_threshold = timestep_threshold
        self.entropy_scale = entropy_scale

    def fuse_now(self, ctx: TemporalAttentionContext) -> bool:
        t = ctx.extra.get("timestep")
        if t is None:
            raise RuntimeError("FreePCA needs the diffusion timestep of each call (ctx.extra['timestep']): run it "
                               "through freelong's LongVideoPipeline")
        return float(t) > self.timestep_threshold

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: PositionBias | None,
                 ctx: TemporalAttentionContext) -> torch.Tensor:
        require_frame_bias(bias, ctx.tokens_per_frame)
        if ctx.tokens_per_frame != 1:
            raise ValueError("FreePCA runs on a UNet's temporal attention (one token per frame)")
        rows, heads, num_frames, d = q.shape
        if num_frames < self.window:
            raise ValueError(f"method.window={self.window} is larger than the {num_frames} frames of this call")
        scale = d**-0.5
        s0 = math.sqrt(math.log(num_frames) / math.log(self.window)) if self.entropy_scale else 1.0
        qg, kg, vg = q, k, v
        if ctx.positions is not None:
            qg, kg, vg = add_positions(q, k, v, ctx.positions, frame_index(num_frames))
        glob = _softmax_attention(qg * s0, kg, vg, scale, full_bias(bias, num_frames, q.device))
        glob = glob.permute(0, 2, 1, 3).reshape(rows, num_frames, heads * d)  # heads merged, as the release
        fuse = self.fuse_now(ctx)
        batch = ctx.batch
        acc = torch.zeros_like(glob)
        count = torch.zeros(num_frames, 1, dtype=glob.dtype, device=glob.device)
        local_pos = None if ctx.positions is None else ctx.positions(torch.arange(self.window, device=q.device))
        for n, (a, b) in enumerate(sliding_windows(num_frames, self.window, self.stride)):
            qs, ks, vs = q[:, :, a:b], k[:, :, a:b], v[:, :, a:b]
            if local_pos is not None:  # window-local positions 0..window-1
                qs, ks, vs = (x + dx.to(x.dtype) for x, dx in zip((qs, ks, vs), local_pos))
            wbias = None
            if bias is not None:
                idx = torch.arange(a, b)[None]
                wbias = block_bias(bias, idx, idx, q.device)[:, 0]
            out = _softmax_attention(qs, ks, vs, scale, wbias)
            out = out.permute(0, 2, 1, 3).reshape(rows, b - a, heads * d)
            if n > 0 and fuse:
                out = self._fuse(out, glob[:, a:b], batch, min(n, self.num_components))
            acc[:, a:b] += out
            count[a:b] += 1
        out = acc / count
        return out.reshape(rows, num_frames, heads, d).transpose(1, 2)

    @staticmethod
    def _fuse(local: torch.Tensor, glob: torch.Tensor, batch: int, keep: int) -> torch.Tensor:
        """Per sample: rows ``(B*H*W, W, C)`` → ``(B, H*W*C, W)`` matrices (the release's ``(b d) n``), fused."""
        rows, w, c = local.shape

        def as_matrix(x):
            return x.reshape(batch, rows // batch, w, c).permute(0, 1, 3, 2).reshape(batch, -1, w)

        fused = pca_fuse(as_matrix(local), as_matrix(glob), keep)
        return fused.reshape(batch, rows // batch, c, w).permute(0, 1, 3, 2).reshape(rows, w, c)

    def __repr__(self) -> str:
        return (f"FreePCAProcessor(window={self.window}, stride={self.stride}, num_components={self.num_components}, "
                f"timestep_threshold={self.timestep_threshold}, entropy_scale={self.entropy_scale})")


def _softmax_attention(q, k, v, scale: float, bias: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` written out (the release's einsum path, so the PCA that follows sees the
    same floating-point values as the release's on the same inputs)."""
    sim = torch.einsum("...id,...jd->...ij", q, k) * scale
    if bias is not None:
        sim = sim + bias.to(sim.dtype)
    return torch.einsum("...ij,...jd->...id", sim.softmax(dim=-1), v)


@register_method("freepca")
@dataclass
class FreePCA(Method):
    """FreePCA on a UNet backbone's temporal attention, with its mean-reusing initial noise."""

    levels = ("attention", "initial noise")

    window: int = 16
    """Frames per local window (the release: 16, VideoCrafter2's training length)."""
    stride: int = 4
    """Frames between window starts (the release: 4); a last window ends at the last frame."""
    num_components: int = 3
    """Most principal components taken from the global branch (window ``w`` takes ``min(w, num_components)``)."""
    timestep_threshold: float = 250.0
    """Fuse only at diffusion timesteps ``t > timestep_threshold`` (0-1000 scale; the release: 250)."""
    entropy_scale: bool = True
    """Scale the global branch's queries by ``sqrt(log T / log window)`` (the release: ``log(64, 16)``)."""
    noise: str = "mean_reuse"
    """Initial noise: ``mean_reuse`` (the release's) or ``gaussian``."""

    def validate(self) -> None:
        check_window_stride(self.window, self.stride)
        if self.window < 2:
            raise ValueError(f"method.window must be >= 2 (a PCA over frames), got {self.window}")
        if not 0 <= self.num_components <= self.window:
            raise ValueError(f"method.num_components must be in [0, window={self.window}], got {self.num_components}")
        if not 0 <= self.timestep_threshold <= 1000:
            raise ValueError(f"method.timestep_threshold must be in [0, 1000], got {self.timestep_threshold}")
        if self.noise not in ("mean_reuse", "gaussian"):
            raise ValueError(f"method.noise must be mean_reuse or gaussian, got {self.noise!r}")

    def check_frames(self, num_frames: int) -> None:
        if num_frames < self.window:
            raise ValueError(f"method.window={self.window} is larger than num_frames={num_frames}: FreePCA needs at "
                             f"least one full window")

    def check_model(self, model_cfg: Any) -> None:
        family = model_cfg.get("family")
        if family == "wan" or family not in UNET_FAMILIES:
            raise ValueError(f"method=freepca runs on the UNets' temporal attention (families "
                             f"{', '.join(UNET_FAMILIES)}); model {model_cfg.get('name')} is family {family}")

    def processor(self) -> FreePCAProcessor:
        return FreePCAProcessor(self.window, self.stride, self.num_components, self.timestep_threshold,
                                self.entropy_scale)

    def init_noise(self, shape, generator=None, dtype=torch.float32):
        if self.noise == "gaussian":
            return super().init_noise(shape, generator, dtype)
        return mean_reuse_noise(shape, self.window, generator, dtype)


__all__ = ["FreePCA", "FreePCAProcessor", "mean_reuse_noise", "pca_fuse"]
