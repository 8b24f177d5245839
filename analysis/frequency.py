"""Per-band signal-to-noise ratio of the denoising trajectory vs video length (FreeLong, Fig. 2).

The paper plots, for space-time, space and time, how the SNR of the low and high frequency bands
of long videos compares with that of 16-frame videos, but does not define its SNR. Ours:

**Which tensors.** During sampling, at the recorded denoising steps, in latent space
(``(B, C, T, H, W)``): the latent ``x_t`` and the model's guided noise prediction ``ε̂``. With
``α_t² = ᾱ_t`` (the scheduler's ``alphas_cumprod[t]``) and ``σ_t² = 1 − ᾱ_t``, the predicted clean
latent is ``x̂0 = (x_t − σ_t ε̂) / α_t``, so that ``x_t = α_t x̂0 + σ_t ε̂`` splits exactly into a
*signal* part ``α_t x̂0`` and a *noise* part ``σ_t ε̂``.

**Spectra, per domain.** ``F`` is the orthonormal DFT (``norm="ortho"``, so white noise of variance
v has expected power v in every bin, whatever the length) over the domain's axes:
space-time = 3D over ``(T, H, W)``; space = 2D over ``(H, W)`` of each frame; time = 1D over ``T`` of
each latent pixel. A bin's *normalised radial frequency* is ``r = sqrt(Σ_a (k_a / (N_a/2))²)`` over
the domain's axes, with ``k_a`` the signed integer frequency of axis ``a`` (``N_a`` samples), so
``r = 1`` is the Nyquist frequency (``π`` in the paper's units) along an axis.

**Bands.** The paper's split: low = ``r < cutoff`` (``0.25``, i.e. below 0.25π), high =
``r ≥ cutoff``. ``analysis.cutoff`` may also be a list of increasing edges ``[e1, ..., eK]`` for K+1
bands ``r < e1``, ``e1 ≤ r < e2``, ..., ``r ≥ eK`` (e.g. FreeLong++'s band edges ``[0.125, 0.25]``, so
the figure shows each branch's band). Diagonal bins of the 2D/3D domains whose radius exceeds 1 (every axis below its
Nyquist, the norm above) count as high, so low + high cover every bin (Parseval holds per band
sum). The zero-frequency (DC) bin belongs to the low band unless ``exclude_dc`` is set.

**SNR.** ``E_band[z]`` is the mean of ``|F z|²`` over the band's bins and over everything the FFT
does not transform: batch, channels, and frames (space) or pixels (time). ``ε̂`` is the
classifier-free-guided prediction the sampler steps with. Then
``SNR_band = E_band[α_t x̂0] / E_band[σ_t ε̂] = α_t² E_band[x̂0] / σ_t² E_band[ε̂]``.

**Relative to 16 frames.** For a method, domain and band, the per-step SNRs of all prompts, seeds
and recorded steps are averaged geometrically (mean of ``log SNR``) at each length and divided by
the same average at the reference length (the shortest, 16 by default). Because every length
records the same steps, the ``α_t²/σ_t²`` factor cancels step by step: the figure compares
``E[x̂0]/E[ε̂]`` band energies between lengths. Default steps: all of them.

``python run.py experiment=snr_vs_length`` writes ``snr.csv`` (one row per video, step, domain and
band), ``snr_relative.csv`` (the plotted values) and ``snr_vs_length.{png,pdf}`` in its run dir.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
from omegaconf import DictConfig

from freelong.app.records import KeyedCache

from .common import LengthSweep, analysis_options, check_lengths, pyplot, title_suffix, write_csv

log = logging.getLogger("freelong.analysis")

# FFT axes of a (B, C, T, H, W) latent per domain.
DOMAINS: dict[str, tuple[int, ...]] = {"spacetime": (2, 3, 4), "space": (3, 4), "time": (2,)}
DOMAIN_TITLES = {"spacetime": "space-time (3D FFT)", "space": "space (2D FFT per frame)",
                 "time": "time (1D FFT per pixel)"}
BANDS = ("low", "high")
DEFAULTS: dict[str, Any] = {
    "lengths": [16, 32, 64, 128],
    "methods": None,
    "steps": None,
    "cutoff": 0.25,
    "exclude_dc": False,
    "reference_length": None,
}


def radial_frequency(sizes: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Normalised radial frequency ``r`` of every bin of an unshifted DFT of shape ``sizes`` (1 = Nyquist)."""
    grids = [torch.fft.fftfreq(n, device=device, dtype=torch.float64) * 2.0 for n in sizes]  # k / (N/2)
    r2 = torch.zeros(tuple(sizes), dtype=torch.float64, device=device)
    for axis, g in enumerate(grids):
        shape = [1] * len(sizes)
        shape[axis] = -1
        r2 = r2 + g.reshape(shape) ** 2
    return r2.sqrt()


def band_names(cutoff: float | Sequence[float]) -> list[str]:
    """``low``/``high`` for one cut-off; ``r<e1``, ``e1≤r<e2``, ..., ``r≥eK`` for a list of edges."""
    edges = _edges(cutoff)
    if not isinstance(cutoff, Sequence):
        return list(BANDS)
    lows = [f"r<{edges[0]:g}"] + [f"{a:g}≤r<{b:g}" for a, b in zip(edges, edges[1:])]
    return lows + [f"r≥{edges[-1]:g}"]


def _edges(cutoff: float | Sequence[float]) -> tuple[float, ...]:
    edges = tuple(float(c) for c in cutoff) if isinstance(cutoff, Sequence) else (float(cutoff),)
    if not edges or edges[0] <= 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"cutoff must be > 0 (or a list of increasing edges > 0), got {cutoff}")
    return edges


@lru_cache(maxsize=64)
def _band_masks(sizes: tuple[int, ...], edges: tuple[float, ...], names: tuple[str, ...], exclude_dc: bool,
                device: str) -> dict[str, torch.Tensor]:
    r = radial_frequency(sizes, device)
    bounds = (-math.inf, *edges, math.inf)
    masks = {name: (r >= lo) & (r < hi) for name, lo, hi in zip(names, bounds, bounds[1:])}
    if exclude_dc:
        masks[names[0]] = masks[names[0]] & (r > 0)
    return masks


def band_masks(
    sizes: Sequence[int], cutoff: float | Sequence[float] = 0.25, exclude_dc: bool = False
) -> dict[str, torch.Tensor]:
    """Boolean masks (unshifted DFT layout) of the low (``r < cutoff``) and high (``r >= cutoff``) bands,
    or of the bands between a list of edges (:func:`band_names`)."""
    edges = _edges(cutoff)
    return _band_masks(tuple(int(s) for s in sizes), edges, tuple(band_names(cutoff)), bool(exclude_dc), "cpu")


def band_energies(
    z: torch.Tensor, domain: str, cutoff: float | Sequence[float] = 0.25, exclude_dc: bool = False
) -> dict[str, float]:
    """Mean ``|F z|²`` per band for a ``(B, C, T, H, W)`` tensor (see the module docstring).

    NaN for a band with no bins (e.g. the low band with ``exclude_dc`` on a tiny grid).
    """
    if z.ndim != 5:
        raise ValueError(f"expected a (B, C, T, H, W) tensor, got shape {tuple(z.shape)}")
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
    axes = DOMAINS[domain]
    power = torch.fft.fftn(z.to(torch.float64 if z.device.type == "cpu" else torch.float32), dim=axes,
                           norm="ortho").abs().square()
    rest = tuple(d for d in range(5) if d not in axes)
    spectrum = power.mean(dim=rest).cpu().to(torch.float64)  # mean over the axes the FFT leaves alone
    sizes = tuple(z.shape[a] for a in axes)
    out = {}
    for band, mask in band_masks(sizes, cutoff, exclude_dc).items():
        out[band] = float(spectrum[mask].mean()) if bool(mask.any()) else math.nan
    return out


def band_snr(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    alpha_bar: float,
    cutoff: float | Sequence[float] = 0.25,
    exclude_dc: bool = False,
    domains: Sequence[str] = tuple(DOMAINS),
) -> list[dict[str, Any]]:
    """Per-domain, per-band ``SNR = α² E[x̂0] / σ² E[ε̂]`` at one step, with the energies behind it."""
    if not (0.0 < alpha_bar <= 1.0):
        raise ValueError(f"alpha_bar must be in (0, 1], got {alpha_bar}")
    sigma = math.sqrt(1.0 - alpha_bar)
    noise = sigma * eps.double() if eps.device.type == "cpu" else sigma * eps.float()
    signal = x_t.to(noise.dtype) - noise  # = α_t x̂0
    rows = []
    for domain in domains:
        es = band_energies(signal, domain, cutoff, exclude_dc)
        en = band_energies(noise, domain, cutoff, exclude_dc)
        for band in es:
            snr = es[band] / en[band] if en[band] > 0 else math.nan
            rows.append({"domain": domain, "band": band, "signal_energy": es[band], "noise_energy": en[band],
                         "snr": snr})
    return rows


class SNRRecorder:
    """A ``LongVideoPipeline`` step callback that keeps only the per-band SNR of the chosen steps."""

    def __init__(self, steps: Sequence[int] | None = None, cutoff: float | Sequence[float] = 0.25,
                 exclude_dc: bool = False):
        self.steps = None if steps is None else {int(s) for s in steps}
        self.cutoff = cutoff
        self.exclude_dc = exclude_dc
        self.rows: list[dict[str, Any]] = []

    def wants(self, step_index: int, num_steps: int) -> bool:
        if self.steps is None:
            return True
        return step_index in self.steps or (step_index - num_steps) in self.steps  # negative = from the end

    def __call__(self, info: dict[str, Any]) -> None:
        scheduler = info["scheduler"]
        num_steps = len(scheduler.timesteps)
        i = info["step_index"]
        if not self.wants(i, num_steps):
            return
        t = int(info["timestep"])
        alpha_bar = float(scheduler.alphas_cumprod[t])
        for row in band_snr(info["latents"], info["noise_pred"], alpha_bar, self.cutoff, self.exclude_dc):
            self.rows.append({"step": i, "timestep": t, "alpha_bar": alpha_bar, **row})


def relative_snr(df: Any, reference_length: int) -> Any:
    """Geometric-mean SNR per (method, domain, band, length), divided by its value at ``reference_length``."""
    import numpy as np

    valid = df[np.isfinite(df["snr"]) & (df["snr"] > 0)].copy()
    valid["log_snr"] = np.log(valid["snr"])
    keys = ["method", "domain", "band"]
    g = valid.groupby([*keys, "length"], as_index=False).agg(log_snr=("log_snr", "mean"), n=("log_snr", "size"))
    ref = g[g["length"] == reference_length][[*keys, "log_snr"]].rename(columns={"log_snr": "ref_log_snr"})
    out = g.merge(ref, on=keys, how="left")
    out["snr_geomean"] = np.exp(out["log_snr"])
    out["relative_snr"] = np.exp(out["log_snr"] - out["ref_log_snr"])
    out = out.drop(columns=["log_snr", "ref_log_snr"])
    return out.sort_values([*keys, "length"]).reset_index(drop=True)


def plot_relative_snr(rel: Any, reference_length: int, title_extra: str = ""):
    """One panel per domain: relative SNR vs length, a colour per method, solid low / dashed high band."""
    plt = pyplot()
    methods = list(dict.fromkeys(rel["method"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bands = list(dict.fromkeys(rel["band"]))
    styles = {"low": "-", "high": "--"} if set(bands) <= set(BANDS) else dict(zip(bands, ["-", "--", ":", "-."] * 4))
    fig, axes = plt.subplots(1, len(DOMAINS), figsize=(4.6 * len(DOMAINS), 3.8), sharey=True, squeeze=False)
    lengths = sorted(rel["length"].unique())
    for ax, domain in zip(axes[0], DOMAINS):
        for mi, method in enumerate(methods):
            for band in bands:
                d = rel[(rel["method"] == method) & (rel["domain"] == domain) & (rel["band"] == band)]
                if d.empty:
                    continue
                ax.plot(d["length"], d["relative_snr"], styles[band], marker="o", color=colors[mi % len(colors)],
                        label=f"{method} — {band}")
        ax.axhline(1.0, color="0.6", lw=0.8, zorder=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths)
        ax.set_xticklabels([str(n) for n in lengths])
        ax.set_xlabel("frames")
        ax.set_title(DOMAIN_TITLES[domain])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"SNR / SNR at {reference_length} frames")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), bbox_to_anchor=(0.5, -0.02 - 0.06 *
               math.ceil(len(labels) / 4)), frameon=False)
    split = "low: r < cutoff, high: r ≥ cutoff" if set(bands) <= set(BANDS) else "bands of the normalised radius r"
    fig.suptitle(f"Per-band SNR vs video length ({split}){title_extra}", fontsize=10)
    fig.tight_layout()
    return fig


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """``python run.py experiment=snr_vs_length``: generate at every length, record SNRs, write CSV + figure."""
    import pandas as pd

    from freelong.errors import ConfigError

    opts = analysis_options(cfg, DEFAULTS)
    lengths = check_lengths(opts["lengths"])
    reference = int(opts["reference_length"] or lengths[0])
    if reference not in lengths:
        raise ConfigError(f"analysis.reference_length={reference} is not in analysis.lengths={lengths}")
    cutoff = opts["cutoff"]
    edges = list(cutoff) if isinstance(cutoff, Sequence) and not isinstance(cutoff, str) else [cutoff]
    if (not edges or not all(isinstance(e, (int, float)) and 0 < e < 1 for e in edges)
            or any(b <= a for a, b in zip(edges, edges[1:]))):
        raise ConfigError(f"analysis.cutoff must be in (0, 1) or a list of increasing edges in (0, 1), got {cutoff}")
    cutoff = [float(e) for e in edges] if isinstance(cutoff, Sequence) else float(cutoff)
    steps = opts["steps"]
    if steps is not None and (not isinstance(steps, list) or not all(isinstance(s, int) for s in steps)):
        raise ConfigError(f"analysis.steps must be null (all steps) or a list of step indices, got {steps!r}")
    sweep = LengthSweep.prepare(cfg, opts["methods"], lengths)
    setup = sweep.setup
    cache = KeyedCache(setup.run_dir / "records", overwrite=cfg.overwrite)
    log.info("snr_vs_length in %s: %d method(s) x %d length(s) x %d video(s)", setup.run_dir, len(sweep.methods),
             len(lengths), len(sweep.jobs))

    rows: list[dict[str, Any]] = []
    for entry in sweep.methods:
        pipe = setup.pipeline(entry.method)
        for n in lengths:
            for job in sweep.jobs:
                key = sweep.key("snr", entry, n, job, steps=steps, cutoff=opts["cutoff"],
                                exclude_dc=opts["exclude_dc"])
                cached = cache.get(key)
                if cached is None:
                    recorder = SNRRecorder(steps, cutoff, bool(opts["exclude_dc"]))
                    sweep.sample(pipe, n, job, callback=recorder)
                    cached = [{"method": entry.label, "length": n, "prompt_index": job.index,
                               "prompt": job.prompt_text, "seed": job.seed, **r} for r in recorder.rows]
                    cache.put(key, cached)
                    log.info("%s, %d frames, %s: %d SNR rows", entry.label, n, job.stem, len(cached))
                rows.extend(cached)
    if not rows:
        raise ConfigError("analysis.steps selected no denoising step; nothing was recorded")
    df = sweep.tag(pd.DataFrame(rows))
    rel = sweep.tag(relative_snr(df, reference))
    out = setup.run_dir
    tables = [write_csv(df, out / "snr.csv"), write_csv(rel, out / "snr_relative.csv")]
    fig = plot_relative_snr(rel, reference, title_suffix(setup.backbone))
    return sweep.finish(fig, "snr_vs_length", tables, snr=df, relative=rel)


__all__ = [
    "BANDS",
    "DOMAINS",
    "SNRRecorder",
    "band_energies",
    "band_masks",
    "band_snr",
    "plot_relative_snr",
    "radial_frequency",
    "relative_snr",
    "run_experiment",
]
