"""Small helpers shared by the tests (random attention inputs, the DiT parity tests' pieces). Weight-folder
fakes: ``fakes.py``; synthetic videos: ``eval_synthetic.py``; a stand-in vbench package: ``fake_vbench.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch


def random_qkv(rows: int, heads: int, length: int, d: int, seed: int = 0,
               dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """``[q, k, v]``, each ``(rows, heads, length, d)`` standard normal from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, heads, length, d, generator=g, dtype=dtype) for _ in range(3)]


def relative_bias(heads: int, max_offset: int, seed: int = 1):
    """A random relative position bias ``bias(q_idx, k_idx) -> (heads, Lq, Lk)`` for offsets in ``[-m, m)``."""
    table = torch.randn(heads, 2 * max_offset, generator=torch.Generator().manual_seed(seed))
    return lambda qi, ki: table[:, (ki[None, :] - qi[:, None]) + max_offset]


def column_ctx(t: int, rows: int = 6, level: int = 1, step: int = 0):
    """The context of a UNet call over a ``(t, rows, 1)`` video, batch 1, at ``step`` of 4."""
    from freelong.attention.context import TemporalAttentionContext

    return TemporalAttentionContext(frame_shape=(t, rows, 1), batch=1, level=level, name="x", step_index=step,
                                    num_steps=4)


def bare_backbone(denoiser: torch.nn.Module, name: str = "bare"):
    """The base :class:`~freelong.models.base.Backbone` viewed over a denoiser alone (tests that build only a UNet):
    installing a method needs nothing but the denoiser (:meth:`Backbone.over`)."""
    from freelong.models.base import Backbone

    return Backbone.over(denoiser, name, native_frames=16)


def attach(method, denoiser: torch.nn.Module):
    """``bare_backbone(denoiser).attach(method)``: the handle of the one installer."""
    return bare_backbone(denoiser).attach(method)


def backbone_fixture(model: str, scope: str = "module") -> Any:
    """A fixture building ``load_backbone(model)`` once per ``scope``: assign it to the fixture's name
    (``cog = backbone_fixture("cogvideox_5b_tiny")``). Per module by default, as tests may swap blocks or attach
    methods."""

    @pytest.fixture(scope=scope)
    def _backbone():
        from freelong import load_backbone

        return load_backbone(model)

    return _backbone


def compose_config(*overrides: str, hydra_config: bool = False):
    """The app's config composed exactly as ``run.py`` composes it (the ``compose_cfg`` fixture);
    ``hydra_config``: with the ``hydra`` node (sweeper parameters)."""
    from hydra import compose, initialize_config_dir

    from freelong.app.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


PROMPT = "a red fox runs through snow"  # the DiT parity tests' prompt


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference ``|a - b| / |b|`` (Frobenius norms)."""
    return float((a - b).norm() / b.norm())


def dit_latents(bb, frames: int = 21, h: int = 32, w: int = 48, seed: int = 1) -> torch.Tensor:
    """Seeded initial latents of a ``frames``-frame ``h x w`` video for a DiT backbone ``bb``."""
    g = torch.Generator().manual_seed(seed)
    f = bb.vae_scale_factor
    return torch.randn(1, bb.latent_channels, bb.latent_frames(frames), h // f, w // f, generator=g)


def pipeline_latents(bb, method, latents: torch.Tensor, steps: int = 3, frames: int = 21,
                     guidance: float | None = None):
    """The final latents of ``LongVideoPipeline(bb, method)`` from ``latents`` (the parity tests' "ours");
    ``guidance=None``: the model's own guidance scale, as the pipeline defaults to it."""
    from freelong import LongVideoPipeline

    f = bb.vae_scale_factor
    pipe = LongVideoPipeline(bb, method, progress=False)
    return pipe(PROMPT, num_frames=frames, height=latents.shape[-2] * f, width=latents.shape[-1] * f,
                num_inference_steps=steps, guidance_scale=guidance, latents=latents.clone(), output_type="latent")


# The DiT parity tests' method settings: at the tiny models' native 21 frames (6 latent frames: a window of 6
# covers the video, RIFLEx's period too, FreeLong++ has one branch) every method is direct sampling; at 41 frames
# (11 latent) windows of 3 and RIFLEx's lowered first frequency change the result.
NATIVE_LENGTH_METHODS = [
    ("sliding_window", {"window": 6, "stride": 2}),
    ("freenoise", {"window": 6, "stride": 2}),
    ("freelong", {"window": 6, "local_only_levels": []}),
    ("freelong_pp", {}),
    ("riflex", {}),
]
BEYOND_NATIVE_METHODS = [
    ("sliding_window", {"window": 3, "stride": 1}),
    ("freelong", {"window": 3, "noise_stride": 1, "local_only_levels": []}),
    ("riflex", {"k": 1}),
]


def method_and_direct(bb, name: str, params: dict[str, Any], latents: torch.Tensor, frames: int = 21,
                      guidance: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2-step final latents of ``get_method(name, **params)`` and of direct sampling from the same ``latents``:
    the pair every DiT family's tests compare (equal at the native length, different beyond it)."""
    from freelong import get_method

    direct = pipeline_latents(bb, "direct", latents, steps=2, frames=frames, guidance=guidance)
    return pipeline_latents(bb, get_method(name, **params), latents, steps=2, frames=frames, guidance=guidance), direct


class DiTMethodTests:
    """The methods-vs-direct tests that families run alike (subclassed as ``Test...`` with ``backbone`` naming
    the module's backbone fixture): every method equals direct sampling at the native length and changes the
    result beyond it. Wan, with its own thresholds, and Wan2.2, over two models, call :func:`method_and_direct`."""

    backbone: str

    @pytest.mark.parametrize("name,params", NATIVE_LENGTH_METHODS)
    def test_methods_at_native_length_equal_direct(self, request, name: str, params: dict[str, Any]) -> None:
        bb = request.getfixturevalue(self.backbone)
        other, direct = method_and_direct(bb, name, params, dit_latents(bb))
        assert torch.equal(other, direct)

    @pytest.mark.parametrize("name,params", BEYOND_NATIVE_METHODS)
    def test_methods_beyond_native_length_change_the_result(self, request, name: str, params: dict[str, Any]) -> None:
        bb = request.getfixturevalue(self.backbone)
        other, direct = method_and_direct(bb, name, params, dit_latents(bb, frames=41), frames=41)
        assert torch.isfinite(other).all() and rel(other, direct) > 1e-6


def wan_pipeline_latents(bb, latents: torch.Tensor, steps: int = 3, frames: int = 21, guidance: float = 5.0,
                         **kw: Any) -> torch.Tensor:
    """diffusers' own ``WanPipeline`` over ``bb``'s parts from ``latents`` (the Wan parity tests' "theirs")."""
    from diffusers import WanPipeline

    f = bb.vae_scale_factor
    ref = WanPipeline(**bb.components)
    cond, uncond = bb.encode_text([PROMPT]), bb.encode_text([""])
    return ref(prompt_embeds=cond, negative_prompt_embeds=uncond, num_frames=frames, height=latents.shape[-2] * f,
               width=latents.shape[-1] * f, num_inference_steps=steps, guidance_scale=guidance,
               latents=latents.clone(), output_type="latent", **kw).frames


def assert_rejected_before_sampling(bb, frames: int, nearest: str, size: tuple[int, int, int] | None = None) -> None:
    """``LongVideoPipeline(bb)`` refuses ``frames`` (not 4n+1: the message names the ``nearest`` valid counts) and,
    when given, ``size = (height, width, multiple)`` at 21 frames (not multiples of the patch), within one step."""
    from freelong import LongVideoPipeline

    pipe = LongVideoPipeline(bb, "direct", progress=False)
    with pytest.raises(ValueError, match=f"nearest valid: {nearest}"):
        pipe(PROMPT, num_frames=frames, num_inference_steps=1)
    if size is not None:
        height, width, multiple = size
        with pytest.raises(ValueError, match=f"multiples of {multiple}"):
            pipe(PROMPT, num_frames=21, height=height, width=width, num_inference_steps=1)


def save_diffusers_folder(bb, folder: Path, pipeline: str, scheduler: str, **index: Any) -> Path:
    """``bb`` written as the local diffusers folder a real model's loader reads: each part it has (a second expert
    only where there is one), a ``scheduler`` of its own, and ``model_index.json`` naming ``pipeline`` (+ ``index``)."""
    parts = {"transformer": bb.transformer, "transformer_2": getattr(bb, "transformer_2", None), "vae": bb.vae,
             "text_encoder": bb.text_encoder, "tokenizer": bb.tokenizer, "scheduler": bb.make_scheduler(scheduler)}
    for sub, part in parts.items():
        if part is not None:
            part.save_pretrained(folder / sub)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline, **index}))
    return folder


def assert_run_refused(cfg, error: type[Exception], match: str, where: Path, run_dir: Path | None = None) -> None:
    """The app's ``run(cfg, run_dir)`` fails with ``error`` matching ``match`` and no video appears under ``where``:
    a bad setting is refused before anything is generated."""
    from freelong.app.runner import run

    with pytest.raises(error, match=match):
        run(cfg, run_dir)
    assert not any(where.rglob("*.mp4"))


class ReportPage:
    """What tests read from ``analysis/report.py``'s ``index.html`` (parsed, not searched as text).

    ``tables``: every sortable table under ``#table1`` as ``{title, columns, rows, values, note}`` (``rows``: the
    shown texts, ``values``: each cell's ``data-value``); ``grids``: each prompt section's column headers;
    ``captions``: every video cell's caption text; ``videos``: each ``<video>``'s attributes; ``runs``:
    ``{run_dir: {field: value}}`` of the metadata."""

    CAPTURED = ("h2", "h3", "th", "td", "figcaption", "p", "dt", "dd", "code")

    def __init__(self, html: str):
        from html.parser import HTMLParser

        page = self
        self.tables: list[dict] = []
        self.grids: list[list[str]] = []
        self.captions: list[str] = []
        self.runs: dict[str, dict[str, str]] = {}
        self.videos: list[dict[str, str]] = []
        open_: list[tuple[str, dict, list[str]]] = []  # (tag, attributes, text) of the captured elements
        state = {"section": "", "h3": "", "table": None, "dt": ""}

        class Parser(HTMLParser):
            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                if tag == "section":
                    state["section"] = a.get("id") or a.get("class") or ""
                elif tag == "video":
                    page.videos.append(a)
                elif tag == "table":
                    state["table"] = {"title": state["h3"], "columns": [], "rows": [], "values": [], "note": "",
                                      "kind": a.get("class", "")}
                elif tag == "tr" and state["table"] is not None:
                    state["row"] = ([], [])
                state["thead"] = tag == "thead" or (state.get("thead") and tag != "tbody")
                if tag in page.CAPTURED:
                    open_.append((tag, a, []))

            def handle_data(self, data):
                for _, _, text in open_:
                    text.append(data)

            def handle_endtag(self, tag):
                if tag in page.CAPTURED and open_ and open_[-1][0] == tag:
                    _, a, text = open_.pop()
                    page._close(tag, a, " ".join("".join(text).split()), state)
                elif tag == "tr" and state["table"] is not None and (state.get("row") or ([], []))[0]:
                    texts, values = state.pop("row")
                    state["table"]["rows"].append(texts)
                    state["table"]["values"].append(values)
                elif tag == "table" and state["table"] is not None:
                    table = state["table"]
                    (page.grids.append(table["columns"]) if table["kind"] == "grid" else page.tables.append(table))
                    state["table"] = None

        Parser(convert_charrefs=True).feed(html)

    def _close(self, tag: str, attrs: dict, text: str, state: dict) -> None:
        table = state["table"]
        if tag == "h3":
            state["h3"] = text
            if state["section"] == "runs":
                self.runs[text.replace(" RANDOM-INIT", "")] = state["run"] = {}
        elif tag == "th" and table is not None and state["thead"]:
            table["columns"].append(text)
        elif tag == "td" and table is not None and table["kind"] == "sortable":
            state["row"][0].append(text)
            state["row"][1].append(attrs.get("data-value", ""))
        elif tag == "figcaption" and state["section"] != "figures":
            self.captions.append(text)
        elif tag == "p" and "note" in attrs.get("class", "") and self.tables:
            self.tables[-1]["note"] = text
        elif tag == "dt":
            state["dt"] = text
        elif tag == "dd" and state["section"] == "runs":
            state["run"][state["dt"]] = text

    def table(self, starts: str) -> dict:
        """The one table whose title starts with ``starts``."""
        found = [t for t in self.tables if t["title"].startswith(starts)]
        assert len(found) == 1, (starts, [t["title"] for t in self.tables])
        return found[0]

    @staticmethod
    def column(table: dict, name: str, values: bool = True) -> list:
        """One column of a table: its ``data-value`` sort values (numbers as floats, empty as NaN), or texts."""
        i = table["columns"].index(name)
        if not values:
            return [row[i] for row in table["rows"]]

        def number(v: str):
            try:
                return float(v) if v != "" else float("nan")
            except ValueError:
                return v

        return [number(row[i]) for row in table["values"]]
