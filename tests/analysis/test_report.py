"""The HTML report (analysis/report.py), opened in a real headless Chromium (Playwright) from file://.

A 2-method x 2-prompt tiny sweep is generated once with ``python run.py -m ... report=true``; the page
must load without console errors or non-file requests, play every mp4, keep the videos of a prompt
on one clock, seek frame-accurately, sort Table 1 and show the same numbers as ``make_tables.py``.
Without Chromium or Playwright the browser tests skip locally, and fail when ``CI=true``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.report import Column, build_report, label_columns, main
from freelong.video_io import atomic_write_text, write_video

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a red fox", "a blue car"]
FPS = 8
FRAMES = 24


def chromium_path() -> str | None:
    for name in (os.environ.get("FREELONG_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


def browser_or_skip() -> str:
    """Chromium's path; without it (or Playwright) skip locally, fail in CI."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright's Python package is not installed (pip install playwright)"
    exe = chromium_path()
    if exe is None:
        reason = "no Chromium found (apt-get install chromium, or set FREELONG_CHROMIUM)"
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    return exe


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """``run.py -m`` over 2 methods x 2 prompts on the tiny model, scored (two cheap dimensions), report=true."""
    out = tmp_path_factory.mktemp("sweep")
    cmd = [sys.executable, "run.py", "-m", "method=direct,freelong", f"prompts.list=[{','.join(PROMPTS)}]",
           f"num_frames={FRAMES}", "method.window=16", "height=32", "width=48", "num_inference_steps=2",
           "eval=fast", "eval.dims=[temporal_flickering,background_consistency]", "progress=false",
           "device=cpu", "report=true", f"hydra.sweep.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def page():
    exe = browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.problems = []
        pg.on("console", lambda m: m.type == "error" and pg.problems.append(f"console: {m.text}"))
        pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
        pg.on("requestfailed", lambda r: pg.problems.append(f"failed: {r.url} {r.failure}"))
        pg.on("request", lambda r: r.url.startswith("file://") or pg.problems.append(f"non-file request {r.url}"))
        yield pg
        browser.close()


def open_report(page, index: Path) -> None:
    page.goto(index.resolve().as_uri())
    page.wait_for_function("Array.from(document.querySelectorAll('video')).every(v => v.readyState >= 2)",
                           timeout=30_000)


def times(page, section: str) -> list[float]:
    return page.eval_on_selector_all(f"{section} video", "vs => vs.map(v => v.currentTime)")


def test_sweep_report_plays_in_sync_and_sorts(sweep, page):
    index = sweep / "report" / "index.html"  # written by the Hydra callback at the end of the sweep
    assert index.is_file()
    open_report(page, index)

    sections = page.locator("section.prompt")
    assert sections.count() == 2
    assert sorted(page.locator("section.prompt h2").all_inner_texts()) == sorted(f"{p} RANDOM-INIT" for p in PROMPTS)
    assert page.locator("#random-init-banner").is_visible()
    for s in range(2):
        headers = sections.nth(s).locator("table.grid thead th").all_inner_texts()
        assert headers == ["seed", "direct", "freelong"]
    states = page.eval_on_selector_all("video", "vs => vs.map(v => [v.readyState, v.videoWidth, v.duration])")
    assert len(states) == 4
    assert all(r >= 2 and w == 48 and math.isclose(d, FRAMES / FPS, rel_tol=0.05) for r, w, d in states), states

    # Play: every video of the first prompt advances, by the same amount (within one frame); the other
    # prompt's videos stay where they are.
    first, other = "#prompt-1", "#prompt-2"
    before, before_other = times(page, first), times(page, other)
    page.click(f"{first} .play")
    page.wait_for_timeout(400)
    # A video that falls out of step (a stall, a seek) is pulled back onto the shared clock.
    page.eval_on_selector_all(f"{first} video", "vs => { vs[vs.length - 1].currentTime += 0.6; }")
    page.wait_for_timeout(500)
    playing = times(page, first)
    assert max(playing) - min(playing) <= 1 / FPS, playing
    page.click(f"{first} .play")
    after = times(page, first)
    advanced = [a - b for a, b in zip(after, before)]
    assert min(advanced) > 0.25, advanced
    assert max(advanced) - min(advanced) <= 1 / FPS + 1e-6, advanced
    assert times(page, other) == before_other
    assert page.inner_text(f"{first} .play") == "Play"

    # Scrubbing and stepping land every video on the same frame.
    page.locator(f"{first} .scrub").fill("17")
    assert all(math.floor(t * FPS) == 17 for t in times(page, first)), times(page, first)
    page.click(f"{first} .step[data-step='-1']")
    assert all(math.floor(t * FPS) == 16 for t in times(page, first))
    assert page.inner_text(f"{first} .frame-no") == f"frame 16 / {FRAMES - 1}"

    # Frame strip: hidden until toggled; stills are every 3rd frame (24 frames -> 8 stills).
    strip = page.locator(f"{first} .strip img")
    assert strip.count() == 2 * 8 and not strip.first.is_visible()
    page.check(f"{first} .strip-toggle")
    strip.first.wait_for(state="visible", timeout=5000)
    page.wait_for_function(f"Array.from(document.querySelectorAll('{first} .strip img')).every(i => i.naturalWidth)")
    assert strip.nth(3).get_attribute("data-frame") == "9"

    # Table 1: same numbers as make_tables.py; clicking headers reorders the rows.
    table = page.locator("#table1 table.sortable").first
    cols = table.locator("thead th").all_inner_texts()
    rows = table.locator("tbody tr")
    assert rows.count() == 2

    def column(name):
        cells = rows.locator(f"td:nth-child({cols.index(name) + 1})")
        return cells.evaluate_all("tds => tds.map(t => t.dataset.value)")

    tables_dir = sweep / "tables"
    subprocess.run([sys.executable, "scripts/make_tables.py", str(sweep), "--include-random-init", "--out-dir",
                    str(tables_dir)], cwd=ROOT, check=True, capture_output=True)
    (csv_file,) = tables_dir.glob("table1_*.csv")
    expected = {r["Method"]: r for r in csv.DictReader(csv_file.open())}
    methods = column("Method")
    assert sorted(methods) == ["direct", "freelong"]
    for name in ("Sub", "Back", "Motion", "Flicker", "Imaging", "Time (s/step)"):
        ours = [float(v or "nan") for v in column(name)]
        theirs = [float(expected[m][name] or "nan") for m in methods]
        assert np.allclose(ours, theirs, rtol=1e-9, equal_nan=True), name
    assert not math.isnan(float(column("Back")[0]))  # scored, so the table is not all empty

    header = table.locator("thead th").nth(cols.index("Method"))
    header.click()
    assert column("Method") == ["direct", "freelong"]
    header.click()
    assert column("Method") == ["freelong", "direct"]
    table.locator("thead th").nth(cols.index("Back")).click()
    back = [float(v) for v in column("Back")]
    assert back == sorted(back)
    assert page.locator("#runs dl.meta").count() == 2
    assert "random-init" in page.inner_text("#runs")
    assert page.problems == []


def gray_video_run(tmp_path: Path) -> Path:
    """A run directory by hand: one 24-frame video whose frame i is flat gray 10*i+5, and its record."""
    run_dir = tmp_path / "gray_run"
    frames = np.stack([np.full((32, 48, 3), 10 * i + 5, np.uint8) for i in range(FRAMES)])
    write_video(run_dir / "videos/g.mp4", frames, fps=FPS)
    rec = {"video": "videos/g.mp4", "prompt": "gray ramp", "prompt_index": 0, "seed": 0, "model": "synthetic",
           "random_init": False, "weights": {"unet": {"path": "x.pt", "sha256": "ab" * 32}}, "method": "direct",
           "method_params": {}, "num_frames": FRAMES, "height": 32, "width": 48, "fps": FPS}
    atomic_write_text(run_dir / "results.jsonl", json.dumps(rec) + "\n")
    return run_dir


def test_seeking_shows_the_exact_frame(tmp_path, page):
    """The frame the browser paints after a scrub is the one the frame counter names (not a neighbour)."""
    from PIL import Image

    index = build_report([gray_video_run(tmp_path)], tmp_path / "report", copy=True, strip_every=4)
    assert (tmp_path / "report" / "videos").is_dir()
    open_report(page, index)
    assert page.locator("#random-init-banner").count() == 0
    assert "sha256 abababab" in page.inner_text("#runs")
    video = page.locator("video")
    for frame in (0, 1, 7, 13, 22, 23):
        page.locator(".scrub").fill(str(frame))
        page.wait_for_function("v => !v.seeking && v.readyState >= 2", arg=video.element_handle())
        page.wait_for_timeout(100)  # let the compositor paint the seeked frame
        png = tmp_path / f"shot{frame}.png"
        video.screenshot(path=str(png))
        gray = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert round((gray.mean() - 5) / 10) == frame, (frame, gray.mean())
    page.click(".step[data-step='1']")  # at the last frame: stays there
    assert page.inner_text(".frame-no") == f"frame {FRAMES - 1} / {FRAMES - 1}"
    assert page.problems == []


def test_column_labels_name_what_differs():
    cols = [Column("a", "freelong", {"model": "m", "num_frames": 16}, {"window": 8, "d_s": 0.25}),
            Column("b", "freelong", {"model": "m", "num_frames": 32}, {"window": 16, "d_s": 0.25}),
            Column("c", "direct", {"model": "m", "num_frames": 16}, {})]
    label_columns(cols)
    assert [c.label for c in cols] == ["freelong (num_frames=16, window=8)", "freelong (num_frames=32, window=16)",
                                       "direct (num_frames=16)"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "missing" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert main([str(gray_video_run(tmp_path)), "--out", str(tmp_path / "r"), "--strip-every", "0"]) == 2
    assert "--strip-every" in capsys.readouterr().err


def test_single_run_report_and_wandb_artifact(compose_cfg, tmp_path, page, monkeypatch):
    """report=true writes <run dir>/report; logger=wandb attaches it (videos copied in) as a "report" artifact."""
    import wandb
    from omegaconf import OmegaConf

    from freelong.app.runner import run

    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    cfg = compose_cfg("report=true", "logger=wandb", f"logger.dir={tmp_path / 'wb'}", "num_frames=16", "height=32",
                      "width=48", "num_inference_steps=2", "progress=false", "device=cpu", "prompts.list=[a cat]")
    OmegaConf.update(cfg, "paths.output_root", str(tmp_path))
    run_dir = run(cfg)
    wandb.teardown()
    index = run_dir / "report" / "index.html"
    (copied,) = (run_dir / "report" / "videos").glob("*.mp4")
    assert copied.read_bytes() == next((run_dir / "videos").glob("*.mp4")).read_bytes()
    open_report(page, index)
    assert page.locator("section.prompt video").count() == 1
    assert page.locator("#random-init-banner").is_visible()
    assert page.problems == []
    (offline,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    (binary,) = offline.glob("run-*.wandb")
    data = binary.read_bytes()
    for needle in (b"report-", b"index.html", b"assets/report.js", copied.name.encode()):
        assert needle in data, needle  # the artifact's manifest lists the report's files


def test_analysis_figures_are_shown_with_their_model(tmp_path, page):
    """An analysis run dir (figure + config.yaml, no videos) alone makes a report; random-init gets the banner."""
    from PIL import Image

    run_dir = tmp_path / "snr_run"
    run_dir.mkdir()
    Image.new("RGB", (60, 40), (200, 30, 30)).save(run_dir / "snr_vs_length.png")
    (run_dir / "config.yaml").write_text("model:\n  name: lavie_tiny\n  random_init: true\n")
    index = build_report([tmp_path], tmp_path / "report")
    open_report(page, index)
    assert page.locator("section.prompt").count() == 0 and page.locator("#table1").count() == 0
    img = page.locator("#figures img")
    assert img.count() == 1
    page.wait_for_function("i => i.complete && i.naturalWidth === 60", arg=img.element_handle())
    caption = page.inner_text("#figures figcaption")
    assert "SNR vs video length" in caption and "lavie_tiny" in caption and "RANDOM-INIT" in caption
    assert page.locator("#random-init-banner").is_visible()
    assert page.problems == []
