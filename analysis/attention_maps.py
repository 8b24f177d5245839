"""Temporal attention maps (FreeLong, Fig. 3), captured through the processors — no backbone edits.

Every temporal attention layer hands ``q, k, v`` ``(B*H*W, heads, T, d)`` to its processor; during
capture each layer's processor (the method's) is wrapped by :class:`CapturingProcessor`, which runs
it unchanged and additionally computes the ``(T, T)`` attention probabilities of that call,
averaged over heads and the ``B*H*W`` rows (both classifier-free-guidance halves), in row chunks so
the full ``(rows, heads, T, T)`` tensor is never held. Calls are averaged with equal weight per
(layer, step) call; ``layers`` / ``steps`` restrict which calls count.

What "the probabilities" are (``mode``):

* ``effective`` (default): the row-stochastic matrices the method actually applies to ``V``, as each
  processor reports them (``processor.attention_probs(q, k, bias, ctx)``, so a new method brings its
  own): global attention → ``softmax(q kᵀ/√d + bias)``; sliding window / FreeNoise window fusion →
  the fusion-weighted mean of the windows' softmaxes (``A_eff @ V`` equals the processor output);
  FreeLong → its two branches, ``global`` and ``local`` (the masked softmax), as separate maps: the
  spectral blend mixes the branches' *outputs* across space and time, so it has no single
  attention matrix. FreeLong's global map averages only the calls that blend (not level 0, not
  after ``blend_steps``). A processor whose ``__call__`` is not described by an ``attention_probs``
  of its own falls back to the global map (logged).
* ``global``: for every method, the plain global softmax of the layer's q and k — the paper's view.

``python run.py experiment=attention_maps`` writes ``attention_maps.{png,pdf}`` (rows: lengths,
columns: method/branch), ``attention_maps.npz`` (the maps, plus per-layer and per-step maps) and
``attention_maps.csv`` (a locality summary per map) in its run dir.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from freelong.attention.context import PositionBias, TemporalAttentionContext
from freelong.attention.maps import global_attention_probs
from freelong.attention.processor import TemporalAttnProcessor, temporal_attention_layers
from freelong.methods import Method

from .common import LengthSweep, analysis_options, check_lengths, pyplot, title_suffix, write_csv

log = logging.getLogger("freelong.analysis")

MODES = ("effective", "global")
DEFAULTS: dict[str, Any] = {
    "lengths": [16, 64, 128],
    "methods": None,
    "layers": None,
    "steps": None,
    "mode": "effective",
}

ProbsFn = Callable[[torch.Tensor, torch.Tensor, "PositionBias | None", TemporalAttentionContext],
                   dict[str, torch.Tensor]]


def _global_map(q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None, ctx) -> dict[str, torch.Tensor]:
    return {"attn": global_attention_probs(q, k, bias, ctx.tokens_per_frame, ctx.positions)}


def _defined_in(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def explains_itself(proc: Any) -> bool:
    """Whether ``proc.attention_probs`` describes ``proc.__call__``: defined at or below the class whose
    ``__call__`` it runs (a subclass that changes ``__call__`` but inherits ``attention_probs`` does not)."""
    probs, call = _defined_in(type(proc), "attention_probs"), _defined_in(type(proc), "__call__")
    return probs is not None and call is not None and issubclass(probs, call)


def frame_pooled(p: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """A ``(..., T*S, T*S)`` token map of frame-major tokens as the ``(..., T, T)`` frame map: the mass
    the tokens of query frame ``i`` put on key frame ``j``, averaged over the query frame's tokens."""
    s = tokens_per_frame
    t = p.shape[-1] // s
    return p.unflatten(-1, (t, s)).sum(-1).unflatten(-2, (t, s)).mean(-2)


class AttentionMapStore:
    """Streaming sums of per-call mean maps: overall, per layer and per step, for each branch."""

    def __init__(self, layers: Sequence[str] | None = None, steps: Sequence[int] | None = None,
                 mode: str = "effective", max_chunk_elems: int = 1 << 24):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.layers = None if layers is None else set(layers)
        self.steps = None if steps is None else {int(s) for s in steps}
        self.mode = mode
        self.max_chunk_elems = max_chunk_elems
        self.total: dict[str, list] = {}
        self.by_layer: dict[str, dict[str, list]] = defaultdict(dict)
        self.by_step: dict[str, dict[int, list]] = defaultdict(dict)
        self._warned: set[type] = set()

    def wants(self, ctx: TemporalAttentionContext) -> bool:
        if self.layers is not None and ctx.name not in self.layers:
            return False
        if self.steps is None or ctx.step_index is None:
            return True
        i, n = ctx.step_index, ctx.num_steps or 0
        return i in self.steps or (i - n) in self.steps

    def probs_of(self, proc: Any) -> ProbsFn:
        """``fn(q, k, bias, ctx) -> {branch: (rows, heads, T, T)}`` for a processor, per ``mode``."""
        if self.mode == "global":
            return _global_map
        if not explains_itself(proc):
            if type(proc) not in self._warned:
                log.warning("%s does not define attention_probs for its __call__; capturing its global "
                            "attention map", type(proc).__name__)
                self._warned.add(type(proc))
            return _global_map
        return proc.attention_probs

    @torch.no_grad()
    def add(self, proc: Any, q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None,
            ctx: TemporalAttentionContext) -> None:
        fn = self.probs_of(proc)
        if ctx.tokens_per_frame > 1:  # a DiT's 3D self-attention: frame maps (analysis/dit_attention.py)
            self._record(self._dit_sums(fn, proc, q, k, bias, ctx), ctx, q.shape[0] * q.shape[1])
            return
        rows, heads, t, _ = q.shape
        chunk = max(1, self.max_chunk_elems // (heads * t * t))
        sums: dict[str, torch.Tensor] = {}
        for r0 in range(0, rows, chunk):
            for branch, p in fn(q[r0:r0 + chunk], k[r0:r0 + chunk], bias, ctx).items():
                s = p.sum(dim=(0, 1), dtype=torch.float64)
                sums[branch] = sums[branch] + s if branch in sums else s
        self._record(sums, ctx, rows * heads)

    def _dit_sums(self, fn: ProbsFn, proc: Any, q: torch.Tensor, k: torch.Tensor, bias: PositionBias | None,
                  ctx: TemporalAttentionContext) -> dict[str, torch.Tensor]:
        """Frame-map sums over rows and heads of a DiT call. The processor's own ``attention_probs``
        (``(T*S)^2`` token maps, pooled to frames) in chunks of rows x heads while one head's map fits
        ``max_chunk_elems``; beyond that one query frame at a time (:func:`analysis.dit_attention.dit_frame_probs`,
        which knows the built-in processors)."""
        rows, heads, n, _ = q.shape
        sums: dict[str, torch.Tensor] = {}

        def add(maps: dict[str, torch.Tensor]) -> None:
            for branch, p in maps.items():
                t = p.sum(dim=(0, 1), dtype=torch.float64)
                sums[branch] = sums[branch] + t if branch in sums else t

        if n * n <= self.max_chunk_elems:
            hc = max(1, min(heads, self.max_chunk_elems // (n * n)))
            for r0 in range(rows):
                for h0 in range(0, heads, hc):
                    qc, kc = q[r0:r0 + 1, h0:h0 + hc], k[r0:r0 + 1, h0:h0 + hc]
                    add({b: frame_pooled(p, ctx.tokens_per_frame) for b, p in fn(qc, kc, bias, ctx).items()})
            return sums
        from .dit_attention import dit_frame_probs

        add(dit_frame_probs(TemporalAttnProcessor() if fn is _global_map else proc, q, k, ctx))
        return sums

    def _record(self, sums: dict[str, torch.Tensor], ctx: TemporalAttentionContext, count: int) -> None:
        for branch, s in sums.items():
            m = (s / count).cpu()
            self._acc(self.total, branch, m)
            self._acc(self.by_layer[branch], ctx.name, m)
            self._acc(self.by_step[branch], ctx.step_index if ctx.step_index is not None else -1, m)

    @staticmethod
    def _acc(d: dict, key: Any, m: torch.Tensor) -> None:
        if key in d:
            d[key][0] += m
            d[key][1] += 1
        else:
            d[key] = [m.clone(), 1]

    def maps(self) -> dict[str, np.ndarray]:
        """Mean map per branch over every captured call."""
        return {b: (s / n).numpy() for b, (s, n) in self.total.items()}

    def layer_maps(self) -> dict[str, dict[str, np.ndarray]]:
        return {b: {k: (s / n).numpy() for k, (s, n) in d.items()} for b, d in self.by_layer.items()}

    def step_maps(self) -> dict[str, dict[int, np.ndarray]]:
        return {b: {k: (s / n).numpy() for k, (s, n) in d.items()} for b, d in self.by_step.items()}


class CapturingProcessor(TemporalAttnProcessor):
    """Runs ``inner`` unchanged and reports its call's attention probabilities to ``store``."""

    def __init__(self, inner: TemporalAttnProcessor, store: AttentionMapStore):
        self.inner = inner
        self.store = store

    def __call__(self, q, k, v, *, bias, ctx):
        out = self.inner(q, k, v, bias=bias, ctx=ctx)
        if self.store.wants(ctx):
            self.store.add(self.inner, q, k, bias, ctx)
        return out

    def __repr__(self) -> str:
        return f"CapturingProcessor({self.inner!r})"


class CaptureMethod:
    """A method proxy for ``LongVideoPipeline``: the method as it is, its processor wrapped to report its maps.

    ``backbone.attach(CaptureMethod(m, store))`` installs exactly what ``m`` installs, with every processor a
    :class:`CapturingProcessor` around ``m``'s; the handle's ``detach()`` restores the original processors.
    """

    def __init__(self, method: Method, store: AttentionMapStore):
        self.method = method
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.method, name)

    def processor(self) -> CapturingProcessor | None:
        inner = self.method.processor()
        return None if inner is None else CapturingProcessor(inner, self.store)

    def for_multi_prompt(self) -> CaptureMethod:
        inner = self.method.for_multi_prompt()
        return self if inner is self.method else CaptureMethod(inner, self.store)

    def with_native_frames(self, native_frames: int | None) -> CaptureMethod:
        inner = self.method.with_native_frames(native_frames)
        return self if inner is self.method else CaptureMethod(inner, self.store)

    def model_method(self) -> CaptureMethod:
        """What the backbone installs (a loop method's inner method), captured as well."""
        inner = self.method.model_method()
        return self if inner is self.method else CaptureMethod(inner, self.store)


def resolve_layers(unet: nn.Module, layers: Sequence[str | int] | None) -> list[str] | None:
    """Layer names from names or indices into the UNet's temporal layers (module order)."""
    if layers is None:
        return None
    names = list(temporal_attention_layers(unet))
    if not names:  # a DiT: its 3D self-attentions
        from .dit_attention import dit_layer_names

        names = dit_layer_names(unet)
    out = []
    for layer in layers:
        if isinstance(layer, int):
            if not -len(names) <= layer < len(names):
                raise ValueError(f"analysis.layers: index {layer} out of range for {len(names)} temporal layers")
            out.append(names[layer])
        elif layer in names:
            out.append(layer)
        else:
            raise ValueError(f"analysis.layers: unknown layer {layer!r}; temporal layers: {', '.join(names)}")
    return out


def locality_summary(m: np.ndarray) -> dict[str, float]:
    """How diagonal a map is: mean |i-j| under each row's distribution, mass within ±1 frame, entropy."""
    t = m.shape[0]
    i, j = np.indices((t, t))
    dist = np.abs(i - j)
    rows = m / np.clip(m.sum(axis=1, keepdims=True), 1e-30, None)
    ent = -(rows * np.log(np.clip(rows, 1e-30, None))).sum(axis=1)
    return {
        "mean_distance": float((rows * dist).sum(axis=1).mean()),
        "diag_mass_pm1": float((rows * (dist <= 1)).sum(axis=1).mean()),
        "entropy_over_log_t": float(ent.mean() / math.log(t)) if t > 1 else 0.0,
    }


def plot_attention_maps(maps: dict[tuple[str, int], np.ndarray], title_extra: str = ""):
    """Rows: lengths; columns: method/branch. ``maps[(column_label, length)] = (T, T)``."""
    plt = pyplot()
    columns = list(dict.fromkeys(c for c, _ in maps))
    lengths = sorted({n for _, n in maps})
    fig, axes = plt.subplots(len(lengths), len(columns), figsize=(3.2 * len(columns), 3.0 * len(lengths)),
                             squeeze=False)
    for r, n in enumerate(lengths):
        for c, col in enumerate(columns):
            ax = axes[r][c]
            m = maps.get((col, n))
            if m is None:
                ax.axis("off")
                continue
            im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=float(np.quantile(m, 0.995)) or None,
                           interpolation="nearest")
            ax.set_title(f"{col}, {n} frames", fontsize=9)
            ax.set_xlabel("key frame", fontsize=8)
            ax.set_ylabel("query frame", fontsize=8)
            ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    fig.suptitle(f"Temporal attention (mean over heads, positions, layers, steps){title_extra}", fontsize=10)
    fig.tight_layout()
    return fig


def _save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    import io

    from freelong.video_io import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_npz(path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """``python run.py experiment=attention_maps``: capture maps at every length and method, draw one figure."""
    import pandas as pd

    from freelong.errors import ConfigError

    opts = analysis_options(cfg, DEFAULTS)
    lengths = check_lengths(opts["lengths"])
    if opts["mode"] not in MODES:
        raise ConfigError(f"analysis.mode must be one of {', '.join(MODES)}, got {opts['mode']!r}")
    for key in ("steps", "layers"):
        val = opts[key]
        if val is not None and not isinstance(val, list):
            raise ConfigError(f"analysis.{key} must be null (all) or a list, got {val!r}")
    sweep = LengthSweep.prepare(cfg, opts["methods"], lengths)
    setup = sweep.setup
    try:
        layers = resolve_layers(setup.backbone.unet, opts["layers"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    cache_dir = setup.run_dir / "records"
    cache_dir.mkdir(exist_ok=True)

    per_map: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    arrays: dict[str, list[np.ndarray]] = defaultdict(list)
    for entry in sweep.methods:
        for n in lengths:
            for job in sweep.jobs:
                key = sweep.key("attention", entry, n, job, layers=layers, steps=opts["steps"], mode=opts["mode"])
                path = cache_dir / f"{key}.npz"
                saved = None if cfg.overwrite else _load_npz(path)
                if saved is None:
                    store = AttentionMapStore(layers, opts["steps"], opts["mode"])
                    sweep.sample(setup.pipeline(CaptureMethod(entry.method, store)), n, job)
                    saved = {f"map|{b}": m for b, m in store.maps().items()}
                    for kind, maps_of in (("layer", store.layer_maps()), ("step", store.step_maps())):
                        saved.update({f"{kind}|{b}|{k}": m for b, d in maps_of.items() for k, m in d.items()})
                    if not saved:
                        raise ConfigError("analysis.layers/steps selected no temporal attention call")
                    _save_npz(path, saved)
                    log.info("%s, %d frames, %s: captured %s", entry.label, n, job.stem,
                             ", ".join(k[4:] for k in saved if k.startswith("map|")))
                for name, m in saved.items():
                    kind, branch, *rest = name.split("|")
                    col = entry.label if branch == "attn" else f"{entry.label} ({branch})"
                    if kind == "map":
                        per_map[(col, n)].append(m)
                    else:  # per-layer / per-step maps, averaged over videos below
                        arrays[f"{col}|{n}|{kind}|{rest[0]}"].append(m)

    maps = {k: np.mean(v, axis=0) for k, v in per_map.items()}
    npz = {f"{col}|{n}": m for (col, n), m in maps.items()}
    npz.update({k: np.mean(v, axis=0) for k, v in arrays.items()})
    out = setup.run_dir
    _save_npz(out / "attention_maps.npz", npz)
    summary = pd.DataFrame([{"map": col, "length": n, "videos": len(per_map[(col, n)]), **locality_summary(m)}
                            for (col, n), m in maps.items()])
    summary["mode"] = opts["mode"]
    table = write_csv(sweep.tag(summary), out / "attention_maps.csv")
    fig = plot_attention_maps(maps, f" — mode: {opts['mode']}" + title_suffix(setup.backbone))
    return sweep.finish(fig, "attention_maps", [out / "attention_maps.npz", table], maps=maps, summary=summary)


__all__ = [
    "AttentionMapStore",
    "CaptureMethod",
    "CapturingProcessor",
    "explains_itself",
    "locality_summary",
    "plot_attention_maps",
    "resolve_layers",
    "run_experiment",
]
