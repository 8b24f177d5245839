"""Per-band SNR: band energies of a hand-built signal, the SNR identity, the relative-SNR table, the experiment."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.frequency import band_energies, band_masks, band_snr, radial_frequency, relative_snr

T, H, W = 16, 8, 8
N = T * H * W


def _signal(a=1.5, b=0.7, c=2.0, d=0.3):
    """a·cos(2π t/16) + b·cos(2π 2h/8) + c·cos(2π 4t/16)·cos(2π 2w/8) + d, as (1, 1, T, H, W).

    Bins (k_t, k_h, k_w) and normalised radii: A (±1,0,0) r=1/8 (low everywhere it is not DC);
    B (0,±2,0) r=1/2; C (±4,0,±2) r=√0.5 (space r=1/2, time r=1/2); d = DC.
    Energies (orthonormal DFT = Parseval): A a²N/2, B b²N/2, C c²N/4, d d²N.
    """
    t = torch.arange(T, dtype=torch.float64)[:, None, None]
    h = torch.arange(H, dtype=torch.float64)[None, :, None]
    w = torch.arange(W, dtype=torch.float64)[None, None, :]
    x = (a * torch.cos(2 * math.pi * t / T) + b * torch.cos(2 * math.pi * 2 * h / H)
         + c * torch.cos(2 * math.pi * 4 * t / T) * torch.cos(2 * math.pi * 2 * w / W) + d)
    return x.expand(T, H, W)[None, None].clone()


def test_radial_frequency_is_normalised_to_nyquist():
    r = radial_frequency((8,))
    assert torch.allclose(r, torch.tensor([0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25], dtype=torch.float64))
    r2 = radial_frequency((4, 4))
    assert r2[2, 2] == pytest.approx(math.sqrt(2))  # the diagonal Nyquist corner
    m = band_masks((16, 8, 8))
    assert int(m["low"].sum()) == 3 and int(m["high"].sum()) == N - 3  # k_t in {-1,0,1}, k_h = k_w = 0


def test_band_energies_of_a_hand_built_signal():
    a, b, c, d = 1.5, 0.7, 2.0, 0.3
    x = _signal(a, b, c, d)
    ea, eb, ec, ed = a * a * N / 2, b * b * N / 2, c * c * N / 4, d * d * N
    st = band_energies(x, "spacetime")
    assert st["low"] == pytest.approx((ea + ed) / 3)
    assert st["high"] == pytest.approx((eb + ec) / (N - 3))
    sp = band_energies(x, "space")  # per-frame 2D FFT: 1 low bin (DC) of 64, averaged over 16 frames
    assert sp["low"] == pytest.approx((ea + ed) / (T * 1))
    assert sp["high"] == pytest.approx((eb + ec) / (T * 63))
    tm = band_energies(x, "time")  # per-pixel 1D FFT: 3 low bins of 16, averaged over 64 pixels
    assert tm["low"] == pytest.approx((ea + eb + ed) / (H * W * 3))
    assert tm["high"] == pytest.approx(ec / (H * W * 13))
    # the DC bin out of the low band
    st0 = band_energies(x, "spacetime", exclude_dc=True)
    assert st0["low"] == pytest.approx(ea / 2) and st0["high"] == pytest.approx(st["high"])
    assert band_energies(x, "time", exclude_dc=True)["low"] == pytest.approx(ea / (H * W * 2))
    assert math.isnan(band_energies(x, "space", exclude_dc=True)["low"])
    # a wider low band (cut-off 0.6 of Nyquist) takes B and the spatial part of C
    assert band_energies(x, "space", cutoff=0.6)["high"] == pytest.approx(0.0, abs=1e-9)


def test_band_energies_average_over_batch_and_channels():
    x = _signal()
    both = torch.cat([x, 2 * x], dim=1)  # channel 2 has 4x the energy
    e1, e2 = band_energies(x, "spacetime"), band_energies(both, "spacetime")
    assert e2["low"] == pytest.approx(e1["low"] * (1 + 4) / 2)


def test_snr_is_alpha2_signal_over_sigma2_noise():
    x0 = _signal()
    eps = _signal(a=0.2, b=1.1, c=0.4, d=0.0).roll(3, dims=-1)
    alpha_bar = 0.36  # alpha = 0.6, sigma = 0.8
    x_t = 0.6 * x0 + 0.8 * eps
    rows = {(r["domain"], r["band"]): r for r in band_snr(x_t, eps, alpha_bar)}
    assert set(rows) == {(d, b) for d in ("spacetime", "space", "time") for b in ("low", "high")}
    for (domain, band), r in rows.items():
        s, n = band_energies(x0, domain)[band], band_energies(eps, domain)[band]
        assert r["snr"] == pytest.approx(0.36 * s / (0.64 * n), rel=1e-9)
        assert r["signal_energy"] == pytest.approx(0.36 * s, rel=1e-9)


def test_relative_snr_is_a_ratio_of_geometric_means():
    rows = []
    for length, vals in ((16, (2.0, 8.0)), (32, (1.0, 4.0)), (64, (3.0, 3.0))):
        for step, v in enumerate(vals):
            rows.append({"method": "m", "domain": "time", "band": "high", "length": length, "step": step, "snr": v})
    rel = relative_snr(pd.DataFrame(rows), 16).set_index("length")["relative_snr"]
    assert rel[16] == pytest.approx(1.0)
    assert rel[32] == pytest.approx(math.sqrt(1 * 4) / math.sqrt(2 * 8))
    assert rel[64] == pytest.approx(3.0 / 4.0)


def test_snr_vs_length_experiment_on_the_tiny_model(compose_cfg, tmp_path):
    from analysis.frequency import run_experiment

    cfg = compose_cfg("experiment=snr_vs_length", "analysis.lengths=[16,32]", "analysis.methods=[direct,freelong]",
                      "num_inference_steps=2", "height=32", "width=32", "progress=false",
                      f"paths.output_root={tmp_path}")
    res = run_experiment(cfg)
    out = res["run_dir"]
    for name in ("snr.csv", "snr_relative.csv", "snr_vs_length.png", "snr_vs_length.pdf", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    df = pd.read_csv(out / "snr.csv")
    assert len(df) == 2 * 2 * 2 * 3 * 2  # methods x lengths x steps x domains x bands
    # recorded alpha_bar is the scheduler's at each timestep
    from freelong import load_backbone

    sched = load_backbone("lavie_tiny").make_scheduler("ddim")
    for t, ab in df[["timestep", "alpha_bar"]].drop_duplicates().itertuples(index=False):
        assert ab == pytest.approx(float(sched.alphas_cumprod[t]))
    # at 16 frames FreeLong's window covers every frame and its noise equals i.i.d. noise: same SNRs as direct
    key = ["length", "step", "domain", "band"]
    d16 = df[df.length == 16].set_index(["method", *key])["snr"]
    assert np.allclose(d16["direct"].sort_index(), d16["freelong"].sort_index(), rtol=1e-6)
    # the plotted table, recomputed independently from snr.csv
    rel = pd.read_csv(out / "snr_relative.csv")
    for r in rel.itertuples():
        sel = df[(df.method == r.method) & (df.domain == r.domain) & (df.band == r.band)]
        gm_n = math.exp(np.log(sel[sel.length == r.length]["snr"]).mean())
        gm_16 = math.exp(np.log(sel[sel.length == 16]["snr"]).mean())
        assert r.relative_snr == pytest.approx(gm_n / gm_16, rel=1e-9)
    assert len(list((out / "records").glob("*.json"))) == 4  # one cached record per video (resume)


def test_bad_analysis_options_fail_before_any_model_is_built(compose_cfg, tmp_path):
    from analysis.frequency import run_experiment
    from freelong.errors import ConfigError

    base = ("experiment=snr_vs_length", f"paths.output_root={tmp_path}")
    with pytest.raises(ConfigError, match="at 8 frames: method.window=16"):
        run_experiment(compose_cfg(*base, "analysis.lengths=[8,16]"))
    with pytest.raises(ConfigError, match="reference_length=24"):
        run_experiment(compose_cfg(*base, "analysis.reference_length=24"))
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        run_experiment(compose_cfg(*base, "analysis.methods=[nope]"))
    assert not any(tmp_path.iterdir())  # no run dir was made
