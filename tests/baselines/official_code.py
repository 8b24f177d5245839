"""Import the official FreeLOC / FreePCA code from a local checkout, patched only where it cannot run on a CPU.

Nothing here is copied from those projects: the checkouts are named by environment variables
(``FREELONG_FREELOC_REPO``: a checkout of Westlake-AGI-Lab/FreeLOC; ``FREELONG_FREEPCA_REPO``: JosephTiTan/FreePCA)
and the parity tests skip without them. The goldens in ``tests/data/`` were written by :func:`write_goldens`
from those checkouts, so the default test run compares against the official outputs without the code.

Patches (each at the smallest scope; everything else runs as released):

FreePCA (``lvdm/modules/attention.py`` and ``lvdm/modules/networks/openaimodel3d.py`` imported as is): ``cv2`` and
``scipy.io`` are imported by the package but never used on this path, so empty stand-in modules satisfy the imports;
``xformers`` is a stand-in whose ``memory_efficient_attention`` is SDPA (the release needs xformers present, see
:func:`_fake_xformers`).

FreeLOC (``wan/modules/model_freeloc.py`` and ``wan/modules/attention.py``):

1. ``wan/__init__.py`` and ``wan/modules/__init__.py`` are skipped (empty namespace packages): they import T5, whose
   ``t5.py`` L478 evaluates ``torch.cuda.current_device()`` at import. ``scipy``/``regex``-style unused imports get
   empty stand-ins when missing.
2. ``prepare_flexattention*`` (L38-81) are called in ``forward`` with the call-site signature of an older version
   (``(B, heads, head_dim, dtype=..., device='cuda', frame_size=..., ...)``), which raises ``TypeError`` as
   released; and their 2-argument mask closures are rejected by ``create_block_mask``. The stand-ins accept that
   signature, call the *official* mask closures (``generate_VRPR_mask_mod``, ``generate_radial_mask_mod_plus``,
   ``generate_mask_mod``) on broadcast index tensors and return dense boolean masks in the same order.
3. ``vrpr_attention`` / ``radial_attention`` (``attention.py`` L193-280 and L284-403) assert CUDA, call
   FlashAttention-2 and the compiled ``flex_attention``, and cast to bfloat16. Their *source* is re-executed with:
   the CUDA assert and the
   half-dtype assert removed, ``half()``/the merge weights kept in ``dtype`` (float32 here, for an fp32 comparison),
   ``flash_attn.flash_attn_func`` = masked SDPA over the window ``|i - j| <= D`` returning ``(out, lse, None)``,
   ``flex_attention(..., block_mask=dense, return_lse=True)`` = masked SDPA returning the natural-log lse.
4. ``flash_attention`` (dense layers, cross-attention; asserts CUDA) = SDPA.
5. Debug ``print`` calls are silenced.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F


def repo(var: str) -> Path | None:
    path = os.environ.get(var)
    return Path(path) if path and Path(path).is_dir() else None


@contextlib.contextmanager
def _stubs(*names: str):
    """Empty stand-ins for packages an import names but this path never uses, removed again afterwards
    (diffusers and transformers probe optional packages by their specs, which a stand-in lacks)."""
    import diffusers.models.modeling_utils  # noqa: F401  (imported before any stand-in exists)

    added = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


# ---------------------------------------------------------------------------------------------- FreePCA
def freepca_attention_module(root: Path):
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    with _stubs("cv2", "scipy", "scipy.io"), _fake_xformers():
        return importlib.import_module("lvdm.modules.attention")


def freepca_unet_class(root: Path):
    """The release's ``UNetModel`` (its spatial attentions on the xformers path, as on the authors' machines)."""
    freepca_attention_module(root)
    with _stubs("cv2", "scipy", "scipy.io"):
        return importlib.import_module("lvdm.modules.networks.openaimodel3d").UNetModel


@contextlib.contextmanager
def _fake_xformers():
    """``xformers.ops.memory_efficient_attention`` = SDPA on ``(B*heads, N, d)``: without xformers the release
    sends *spatial* self-attention through its FreePCA path too (slicing tokens as frames), so the authors' runs
    had it; present only while the module imports (it binds the name then)."""
    if "xformers" in sys.modules:
        yield
        return
    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = lambda q, k, v, attn_bias=None, op=None: F.scaled_dot_product_attention(q, k, v)
    pkg = types.ModuleType("xformers")
    pkg.ops = ops
    sys.modules["xformers"], sys.modules["xformers.ops"] = pkg, ops
    try:
        yield
    finally:
        sys.modules.pop("xformers", None)
        sys.modules.pop("xformers.ops", None)


# ---------------------------------------------------------------------------------------------- FreeLOC
def _masked(q, k, v, allowed):
    """``(out (B, L, H, D), lse (B, H, L))`` for ``(B, H, L, D)`` inputs and a boolean ``(L, L)`` mask."""
    logits = torch.einsum("bhid,bhjd->bhij", q, k) * q.shape[-1] ** -0.5
    logits = logits.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    probs = torch.exp(logits - lse[..., None]).nan_to_num(0.0)
    return torch.einsum("bhij,bhjd->bhid", probs, v), lse


def _flex(q, k, v, block_mask=None, return_lse=False):
    out, lse = _masked(q, k, v, block_mask)
    return (out, lse) if return_lse else out


class _FlashAttn:
    @staticmethod
    def flash_attn_func(q, k, v, window_size=(-1, -1), return_attn_probs=False):  # (B, L, H, D) inputs
        n = q.shape[1]
        i = torch.arange(n)
        left, right = window_size
        allowed = (i[None, :] >= i[:, None] - left) & (i[None, :] <= i[:, None] + right)
        out, lse = _masked(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), allowed)
        return out.transpose(1, 2), lse, None


def _dense_masks(mods, n):
    idx = torch.arange(n)
    qi, kj = idx[:, None], idx[None, :]
    out = []
    for mod in mods:
        try:
            out.append(mod(qi, kj).expand(n, n))
        except TypeError:  # the 4-argument closure
            out.append(mod(None, None, qi, kj).expand(n, n))
    return out


def freeloc_modules(root: Path, dtype: torch.dtype = torch.float32):
    """``(model_freeloc, attention)`` modules of the official code, patched as the module docstring says."""
    for name, sub in (("wan", root / "wan"), ("wan.modules", root / "wan" / "modules")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(sub)]
            sys.modules[name] = pkg
    with _stubs("scipy", "scipy.sparse", "regex"):
        if not hasattr(sys.modules["regex"], "D"):
            sys.modules["regex"].D = None
        attn = importlib.import_module("wan.modules.attention")
        mf = importlib.import_module("wan.modules.model_freeloc")

    ns = {"torch": torch, "math": __import__("math"), "flash_attn": _FlashAttn, "flex_attention": _flex}
    for fn in ("vrpr_attention", "radial_attention"):
        src = inspect.getsource(getattr(attn, fn))
        src = src.replace("assert dtype in half_dtypes", "pass")
        src = src.replace("assert neighbor_query_states.device.type == 'cuda' and", "assert")
        src = src.replace("lse_s.to(torch.bfloat16)", "lse_s.to(dtype)")
        src = src.replace("dtype=torch.bfloat16,", f"dtype=torch.{str(dtype).split('.')[-1]},")
        src = src.replace("half_dtypes = (torch.float16, torch.bfloat16)", "half_dtypes = (dtype,)")
        exec(compile(src, f"<official {fn}>", "exec"), ns)
        setattr(mf, fn, ns[fn])

    def flash_attention(q, k, v, k_lens=None, window_size=(-1, -1), **kw):  # (B, L, H, D)
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    def prep(kind):
        def fn(*args, frame_size, num_frame, context_length=0, **kw):
            n = context_length + num_frame * frame_size
            if kind == "vrpr":
                mods = mf.generate_VRPR_mask_mod(token_per_frame=frame_size, window_size=kw["window_size"],
                                                 window_size_2=kw["window_size_2"])
                return _dense_masks(mods, n)
            if kind == "radial":
                mods = mf.generate_radial_mask_mod_plus(token_per_frame=frame_size, window_size=kw["window_size"],
                                                        window_size_2=kw["window_size_2"], use_first_frame_mask=True)
                return _dense_masks(mods, n)
            return _dense_masks([mf.generate_mask_mod(token_per_frame=frame_size, mul=kw["multiplier"])], n)[0]
        return fn

    mf.flash_attention = flash_attention
    mf.prepare_flexattention_VRPR = prep("vrpr")
    mf.prepare_flexattention_radial_attention = prep("radial")
    mf.prepare_flexattention = prep("plain")
    mf.print = lambda *a, **k: None
    return mf, attn


# ---------------------------------------------------------------------------------------------- goldens
# The tiny official Wan used for FreeLOC (the wan_tiny widths: 2 heads x 12, 2 blocks) and the runtime config that
# sets the release's constants, with ``diag_size_token_per_frame`` at the tiny grid's tokens per frame.
TINY_WAN = dict(patch_size=(1, 2, 2), text_len=16, in_dim=4, dim=24, ffn_dim=48, freq_dim=32, text_dim=32, out_dim=4,
                num_heads=2, num_layers=2)
FREELOC_CASES = {  # name: (latent frames, latent height, latent width, TSA blocks)
    "f41": (41, 8, 8, [0]),
    "f81": (81, 4, 8, [1]),
}


def freeloc_runtime_config(tokens_per_frame: int) -> dict:
    return {"model": {
        "radial_attention": {"window_size_1": 8, "window_size_2": 24,
                             "rope_shift": {"group_size": 8, "window_size": 12},
                             "diag_size_token_per_frame": tokens_per_frame},
        "rp_map": {"diag_size_token_per_frame": tokens_per_frame, "vrpr_clip_max": 20, "vrpr": {"frame_settings": {
            "41": {"window_size_1": 12, "window_size_2": 20, "group_size_1": 2, "group_size_2": 8},
            "81": {"window_size_1": 10, "window_size_2": 14, "group_size_1": 2, "group_size_2": 8}}}}}}


def official_freeloc_case(mf, case: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random tiny official model, its weights in diffusers' names, inputs and the official FreeLOC output."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    frames, h, w, layers = FREELOC_CASES[case]
    torch.manual_seed(seed)
    model = mf.WanModel_Freeloc(model_type="t2v", **TINY_WAN).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, 4, frames, h, w, generator=g)
    ctx = torch.randn(1, 16, 32, generator=g)
    t = torch.tensor([700.0])
    tokens = (h // 2) * (w // 2)
    with torch.no_grad():
        out = model([x[0]], t, [ctx[0]], frames * tokens, enable_rp_map=True, enable_layer_modify=True,
                    rope_relative_layers=layers, use_radial_attention=True,
                    runtime_config=freeloc_runtime_config(tokens))[0]
    sd = convert_wan_transformer_to_diffusers({k: v.clone() for k, v in model.state_dict().items()})
    return {**{f"weight.{k}": v.contiguous() for k, v in sd.items()}, "x": x, "context": ctx, "timestep": t,
            "tsa_layers": torch.tensor(layers), "official": out[None].contiguous()}


def official_freepca_case(mod, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random official temporal ``CrossAttention`` (32 channels, 2 heads x 16), inputs for 2 samples x 2
    positions x 64 frames, and its outputs per sample (the release runs one sample per call) at t=900 and t=200."""
    torch.manual_seed(seed)
    attn = mod.CrossAttention(query_dim=32, heads=2, dim_head=16, temporal_length=16).eval()
    x = torch.randn(4, 64, 32, generator=torch.Generator().manual_seed(seed + 1))
    out = {f"weight.{k}": v.contiguous() for k, v in attn.state_dict().items()}
    out["x"] = x
    with torch.no_grad():
        for t in (900, 200):
            out[f"official_t{t}"] = torch.cat([attn(x[:2], timesteps=torch.tensor([t])),
                                               attn(x[2:], timesteps=torch.tensor([t]))])
    return out


def write_goldens(out_dir: Path) -> None:
    """``python tests/baselines/official_code.py tests/data`` with both repo variables set."""
    from safetensors.torch import save_file

    mf, _ = freeloc_modules(repo("FREELONG_FREELOC_REPO"))
    for case in FREELOC_CASES:
        save_file(official_freeloc_case(mf, case), str(out_dir / f"freeloc_official_{case}.safetensors"))
    save_file(official_freepca_case(freepca_attention_module(repo("FREELONG_FREEPCA_REPO"))),
              str(out_dir / "freepca_official.safetensors"))
    save_file(official_freepca_unet_case(repo("FREELONG_FREEPCA_REPO")),
              str(out_dir / "freepca_official_unet.safetensors"))



def seeded_weights(module: torch.nn.Module, seed: int, std: float = 0.05) -> dict[str, torch.Tensor]:
    """Normal(0, std) for every state-dict entry in sorted key order from one generator: the same weights for the
    release's ``UNetModel`` and our ``VideoCrafterUNet`` (same key names), without storing them."""
    g = torch.Generator().manual_seed(seed)
    sd = module.state_dict()
    return {k: torch.randn(sd[k].shape, generator=g) * std for k in sorted(sd)}


def freepca_unet_params() -> dict:
    """``conf/model/videocrafter2_tiny.yaml``'s UNet (VideoCrafter2 at tiny widths), with lvdm's extra keywords."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "model" / "videocrafter2_tiny.yaml")
    return {**OmegaConf.to_container(cfg.unet), "temporal_length": 16, "use_checkpoint": False}


def official_freepca_unet_case(root: Path, seed: int = 0, size: int = 4) -> dict[str, torch.Tensor]:
    """The release's tiny VideoCrafter2 UNet (FreePCA on its 16 temporal attentions) at 64 frames, t=901."""
    unet = freepca_unet_class(root)(**freepca_unet_params()).eval()
    unet.load_state_dict(seeded_weights(unet, seed), strict=True)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, 4, 64, size, size, generator=g)
    ctx = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        out = unet(x, torch.tensor([901]), context=ctx, fps=28)
    return {"x": x, "context": ctx, "seed": torch.tensor(seed), "official_t901": out.contiguous()}


if __name__ == "__main__":
    write_goldens(Path(sys.argv[1]))
