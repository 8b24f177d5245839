"""The I3D (Inception-v1, Kinetics-400) video features of FVD/KVD, without torchvision.

The network is the one StyleGAN-V's FVD is computed with, in the PyTorch form ``cd-fvd`` loads:
``i3d_pretrained_400.pt`` (a plain ``state_dict``: ``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_var``,
..., ``logits.conv3d.bias``), which this module loads with ``strict=True``. The feature of a clip is the
400 Kinetics logits (before softmax) averaged over the remaining time steps. Every convolution and max-pool
pads like TensorFlow's ``SAME`` (computed from the input size at run time; zeros, also before max-pooling),
batch norm has eps 1e-5.

Preprocessing (``cd-fvd``'s ``preprocess_i3d``): uint8 frames ``(B, T, H, W, 3)`` → float → bilinear resize of
every frame to 224×224 (``align_corners=False``, no antialiasing) → ``2x/255 − 1``.

``tests/eval/test_fvd.py`` checks this module against ``cd-fvd`` itself on random weights saved in that format
(``tests/data/cdfvd_i3d_reference.npz``, produced by ``tests/data/make_cdfvd_reference.py`` in a venv with
torchvision and cd-fvd).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

I3D_SIZE = 224
# (name, kind, args): the trunk in order. conv: (out, kernel, stride); pool: (kernel, stride);
# mixed: the six branch widths (1x1 | 1x1 → 3x3 | 1x1 → 3x3 | pool → 1x1).
TRUNK = (
    ("Conv3d_1a_7x7", "conv", (64, 7, 2)),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "conv", (64, 1, 1)),
    ("Conv3d_2c_3x3", "conv", (192, 3, 1)),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", "mixed", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", "mixed", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", "mixed", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", "mixed", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", "mixed", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", "mixed", (384, 192, 384, 48, 128, 128)),
)


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """TensorFlow ``SAME`` padding for ``F.pad`` (last axis first), the extra pixel at the end."""
    pads: list[int] = []
    for s, k, st in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max(k - (st if s % st == 0 else s % st), 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def _triple(v) -> tuple[int, int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


class Unit3D(nn.Module):
    """``SAME``-padded Conv3d (no bias) → BatchNorm3d(eps 1e-5) → ReLU; or a biased conv alone (the logits)."""

    def __init__(self, cin: int, cout: int, kernel=1, stride=1, logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = _triple(kernel), _triple(stride), logits
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(cout, eps=1e-5, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(tuple(x.shape[2:]), self.kernel, self.stride)))
        return x if self.logits else F.relu(self.bn(x))


class SamePool(nn.Module):
    """Max-pool with ``SAME`` zero padding."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, same_padding(tuple(x.shape[2:]), self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class Mixed(nn.Module):
    """An Inception block: four branches concatenated on channels."""

    def __init__(self, cin: int, widths: tuple[int, ...]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(cin, w0)
        self.b1a, self.b1b = Unit3D(cin, w1a), Unit3D(w1a, w1b, 3)
        self.b2a, self.b2b = Unit3D(cin, w2a), Unit3D(w2a, w2b, 3)
        self.b3a, self.b3b = SamePool(3, 1), Unit3D(cin, w3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class I3D(nn.Module):
    """``I3D()(x (B, 3, T, 224, 224) in [-1, 1])`` → time-averaged logits ``(B, num_classes)``.

    ``width`` < 1 scales every channel count and ``input_size`` < 224 shrinks the frames it is fed (the final
    average pool covers the whole ``input_size/32`` grid): tiny random-init twins for smoke runs, never for numbers.
    """

    def __init__(self, num_classes: int = 400, width: float = 1.0, input_size: int = I3D_SIZE):
        super().__init__()
        self.num_classes, self.width, self.input_size = num_classes, width, input_size

        def w(c: int) -> int:
            return max(1, int(round(c * width)))

        cin = 3
        for name, kind, args in TRUNK:
            if kind == "conv":
                out, k, s = args
                self.add_module(name, Unit3D(cin, w(out), k, s))
                cin = w(out)
            elif kind == "pool":
                self.add_module(name, SamePool(*args))
            else:
                widths = tuple(w(c) for c in args)
                self.add_module(name, Mixed(cin, widths))
                cin = widths[0] + widths[2] + widths[4] + widths[5]
        self.avg_pool = nn.AvgPool3d((2, input_size // 32, input_size // 32), stride=1)  # (2, 7, 7) at 224
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(cin, num_classes, logits=True)
        for m in self.modules():  # He init: random-init twins keep their activations' scale through the depth
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, _, _ in TRUNK:
            x = self._modules[name](x)
        x = self.logits(self.dropout(self.avg_pool(x)))  # (B, classes, T', 1, 1) at 224x224
        return x.mean(dim=(2, 3, 4))


def preprocess_i3d(videos: np.ndarray | torch.Tensor, size: int = I3D_SIZE) -> torch.Tensor:
    """uint8 ``(B, T, H, W, 3)`` → float ``(B, 3, T, size, size)`` in [-1, 1] (bilinear, no antialiasing)."""
    x = torch.as_tensor(np.asarray(videos) if not isinstance(videos, torch.Tensor) else videos).float()
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"videos must be (B, T, H, W, 3) uint8, got shape {tuple(x.shape)}")
    b, t, h, w, c = x.shape
    frames = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    return (2.0 * frames.reshape(b, t, c, size, size).transpose(1, 2) / 255.0 - 1.0).contiguous()


TINY_I3D = {"num_classes": 16, "width": 0.125, "input_size": 64}


def load_i3d(path: str | Path | None, random_init: bool = False, seed: int = 0) -> I3D:
    """The Kinetics-400 I3D from ``i3d_pretrained_400.pt`` (strict), or its tiny seeded random-init twin."""
    from .models import _build_seeded

    if random_init:
        return _build_seeded(lambda: I3D(**TINY_I3D), seed).eval().requires_grad_(False)
    from .weights import torch_load

    model = I3D()
    model.load_state_dict(torch_load(path), strict=True)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def i3d_features(model: I3D, videos: np.ndarray, batch_size: int = 8, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Features ``(B, num_classes)`` float32 of uint8 clips ``(B, T, H, W, 3)``, ``batch_size`` clips per call."""
    out = []
    for i in range(0, len(videos), batch_size):
        x = preprocess_i3d(videos[i:i + batch_size], model.input_size).to(device=device, dtype=dtype)
        out.append(model(x).float().cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, model.num_classes), np.float32)
