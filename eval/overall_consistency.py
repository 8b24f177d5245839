"""overall_consistency: ViCLIP text-video cosine similarity (VBench ``overall_consistency``).

VBench's procedure: from each video take 8 frames, the middle frame of each of 8 equal intervals
(``get_frame_indices(8, n, sample="middle")``, padded with the last index when the video is shorter),
apply ``clip_transform(224)`` to the *uint8* frames (bicubic short side → 224, rounded and clamped back
to uint8 as torchvision does for integer tensors, centre crop, /255, CLIP mean/std), encode the
``(1, 8, 3, 224, 224)`` clip with ViCLIP's vision tower (``test=True``: no token masking) and the prompt
with its text tower (its own BPE tokenizer, 32 tokens), L2-normalise both; the value is their dot
product and the overall value the mean over videos. Prompts, as in VBench's custom-input mode: the
file name without its suffix and a trailing ``-<digits>``, unless given (``--prompt``/``--prompt-file``,
or the run's prompt in ``run.py``).

ViCLIP is VBench's vendored ``third_party/ViCLIP`` code (optional extra, as for motion_smoothness),
imported without ``vbench/__init__``; its module-level imports of ``timm`` and ``pkg_resources`` (both
pull in torchvision or are gone from current setuptools) get minimal stand-ins when the real ones do not
import, and ``vbench.utils`` (only read for ``CACHE_DIR``) points at the folder of the resolved BPE file,
so its import-time download never runs.
"""

from __future__ import annotations

import re
import sys
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import Dimension, DimResult, register_dimension
from .models import MissingExtraError, _build_seeded, vbench_third_party
from .video import Video

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
VICLIP_EXTRA = "pip install vbench==0.1.5 --no-deps && pip install omegaconf scipy ftfy regex"
# A few BPE merges in CLIP's file format, for the random-init twin (the real vocabulary is a weight file).
TINY_BPE = Path(__file__).with_name("data") / "tiny_bpe_vocab.txt.gz"
TINY_VICLIP = {"width": 32, "layers": 2, "heads": 2, "embed_dim": 16}


def prompt_from_filename(path: str | Path) -> str:
    """VBench's ``get_prompt_from_filename``: the stem without a trailing ``-<digits>``."""
    return re.sub(r"-\d+$", "", Path(path).stem)


def middle_frame_indices(num_frames: int, vlen: int) -> list[int]:
    """VBench ``get_frame_indices(num_frames, vlen, sample="middle")``."""
    acc = min(num_frames, vlen)
    intervals = np.linspace(start=0, stop=vlen, num=acc + 1).astype(int)
    idx = [int((a + b - 1) // 2) for a, b in zip(intervals[:-1], intervals[1:])]
    return idx + [idx[-1]] * (num_frames - len(idx))


def clip_transform_uint8(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """VBench's ``clip_transform(224)`` applied to a *uint8* tensor, as overall_consistency does.

    torchvision resizes integer tensors in float, then clamps (bicubic), rounds and casts back to uint8.
    """
    import torch.nn.functional as F

    from .transforms import CLIP_MEAN, CLIP_STD, center_crop, normalize, short_side_size, to_tensor

    x = to_tensor(frames)
    hw = short_side_size(*x.shape[-2:], size)
    if tuple(x.shape[-2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bicubic", align_corners=False, antialias=False)
        x = x.clamp(0, 255).round()
    return normalize(center_crop(x, size) / 255.0, CLIP_MEAN, CLIP_STD)


class _DropPath(nn.Module):
    """Stochastic depth (only active in training; ViCLIP scores in eval mode)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= self.p
        return x * keep / (1 - self.p)


def _importable(name: str) -> bool:
    try:
        __import__(name)
        return True
    except Exception:
        return False


@contextmanager
def _viclip_import_env(bpe_path: Path):
    """Stand-ins for the vendored ViCLIP's module-level imports, removed again afterwards."""
    added: list[str] = []
    tmp = None

    def put(name: str, module: types.ModuleType) -> None:
        if name not in sys.modules:
            sys.modules[name] = module
            added.append(name)

    try:
        if bpe_path.name == BPE_NAME and bpe_path.parent.name == "ViCLIP":
            cache = bpe_path.parent.parent
        else:  # VBench looks for CACHE_DIR/ViCLIP/<BPE_NAME>; give it that layout
            tmp = tempfile.TemporaryDirectory(prefix="viclip-bpe-")
            (Path(tmp.name) / "ViCLIP").mkdir()
            (Path(tmp.name) / "ViCLIP" / BPE_NAME).symlink_to(bpe_path.resolve())
            cache = Path(tmp.name)
        utils = types.ModuleType("vbench.utils")
        utils.CACHE_DIR = str(cache)
        put("vbench.utils", utils)
        if not _importable("timm.models.layers"):
            timm, models = types.ModuleType("timm"), types.ModuleType("timm.models")
            layers, registry = types.ModuleType("timm.models.layers"), types.ModuleType("timm.models.registry")
            layers.DropPath = _DropPath
            registry.register_model = lambda fn: fn
            timm.models, models.layers, models.registry = models, layers, registry
            for name, mod in (("timm", timm), ("timm.models", models), ("timm.models.layers", layers),
                              ("timm.models.registry", registry)):
                sys.modules.pop(name, None)
                put(name, mod)
        if not _importable("pkg_resources"):
            import packaging.version  # noqa: F401 (ViCLIP's tokenizer calls packaging.version.parse)

            pkg = types.ModuleType("pkg_resources")
            pkg.packaging = sys.modules["packaging"]
            put("pkg_resources", pkg)
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)
        if tmp is not None:
            tmp.cleanup()


def viclip_modules(bpe_path: Path) -> tuple[types.ModuleType, types.ModuleType, types.ModuleType, types.ModuleType]:
    """``(viclip, simple_tokenizer, viclip_vision, viclip_text)`` from VBench's vendored code."""
    try:
        vbench_third_party("ViCLIP")  # the path-only vbench package, or MissingExtraError
    except MissingExtraError as err:
        raise MissingExtraError(f"{err}; overall_consistency also needs: {VICLIP_EXTRA}") from err
    with _viclip_import_env(Path(bpe_path)):
        try:
            mods = tuple(vbench_third_party(f"ViCLIP.{m}") for m in ("viclip", "simple_tokenizer",
                                                                     "viclip_vision", "viclip_text"))
        except MissingExtraError as err:
            raise MissingExtraError(f"{err}; overall_consistency needs: {VICLIP_EXTRA}") from err
    return mods  # type: ignore[return-value]


def _init_unset(model: nn.Module) -> None:
    """ViCLIP allocates some parameters with ``torch.empty`` (filled by its checkpoint); fill them for random-init."""
    for name, p in model.named_parameters():
        if name.endswith(("proj", "projection", "positional_embedding", "class_embedding")):
            nn.init.normal_(p, std=0.02)


def load_viclip(path: Path | None, bpe_path: Path, random_init: bool = False, seed: int = 0,
                full_size: bool = False) -> nn.Module:
    """ViCLIP (ViT-L/14 video tower, 8 frames; 12-layer text tower) with ``ViClip-InternVid-10M-FLT.pth``.

    ``random_init`` builds a tiny twin from the same classes (``full_size`` keeps the real widths).
    """
    viclip, tok, vision, text = viclip_modules(bpe_path)
    # CLIP_TEXT builds its own SimpleTokenizer() from the default path bound at import; point it here.
    tok.SimpleTokenizer.__init__.__defaults__ = (str(bpe_path),)
    tokenizer = tok.SimpleTokenizer(str(bpe_path))
    if random_init and not full_size:
        def build() -> nn.Module:
            m = viclip.ViCLIP.__new__(viclip.ViCLIP)
            nn.Module.__init__(m)
            m.tokenizer, m.max_txt_l = tokenizer, 32
            t = TINY_VICLIP
            m.vision_encoder = vision.VisionTransformer(input_resolution=224, patch_size=14, width=t["width"],
                                                        layers=t["layers"], heads=t["heads"],
                                                        output_dim=t["embed_dim"], num_frames=8)
            m.text_encoder = text.CLIP_TEXT(embed_dim=t["embed_dim"], context_length=32,
                                            vocab_size=len(tokenizer.encoder), transformer_width=t["width"],
                                            transformer_heads=t["heads"], transformer_layers=t["layers"],
                                            checkpoint_num=0)
            m.temp = nn.Parameter(torch.ones([]) / 100.0)
            _init_unset(m)
            return m

        model = _build_seeded(build, seed)
    else:
        model = _build_seeded(lambda: viclip.ViCLIP(tokenizer=tokenizer, pretrain=None), seed)
        if random_init:
            _init_unset(model)
        else:
            from .weights import torch_load

            state = torch_load(path)
            model.load_state_dict(state["model"] if "model" in state else state, strict=True)
    return model.eval().requires_grad_(False)


@register_dimension
class OverallConsistency(Dimension):
    name = "overall_consistency"
    label = "Overall"
    weights = ("viclip", "viclip_bpe")
    extras = (f"vbench's vendored ViCLIP: {VICLIP_EXTRA}",)

    @classmethod
    def check_available(cls) -> None:
        try:
            vbench_third_party("ViCLIP")
            import ftfy  # noqa: F401
            import regex  # noqa: F401
        except (MissingExtraError, ImportError) as err:
            raise MissingExtraError(f"{err}; overall_consistency needs: {VICLIP_EXTRA}") from err

    def setup(self) -> None:
        bpe = TINY_BPE if self.ctx.random_init else self.ctx.weights["viclip_bpe"]
        self.model = load_viclip(self.weight_path("viclip"), Path(bpe), self.ctx.random_init,
                                 self.ctx.seed).to(self.ctx.device)
        self._text: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, prompt: str) -> torch.Tensor:
        if prompt not in self._text:
            f = self.model.encode_text(prompt).float()
            self._text[prompt] = f / f.norm(dim=-1, keepdim=True)
        return self._text[prompt]

    @torch.no_grad()
    def score(self, video: Video) -> DimResult:
        prompt = video.prompt if video.prompt is not None else prompt_from_filename(video.path)
        frames = video.frames[middle_frame_indices(8, video.num_frames)]
        x = clip_transform_uint8(frames).to(self.ctx.device)
        v = self.model.encode_vision(x.unsqueeze(0), test=True).float()
        v = v / v.norm(dim=-1, keepdim=True)
        return DimResult(float((v @ self.text_features(prompt).T)[0][0].cpu()))
