"""prompts=vbench: VBench's suite file read, filtered by dimension, sub-sampled reproducibly, recorded."""

import hashlib
import json
import sys

import pytest
from omegaconf import OmegaConf

from freelong.app.prompt_suites import (
    SuiteError,
    filter_prompts,
    locate_vbench_info,
    read_vbench_info,
    sample_prompts,
)
from freelong.app.runner import run
from freelong.app.setup import load_prompts
from freelong.errors import ConfigError

# VBench_full_info.json's layout (a list of {prompt_en, dimension[, auxiliary_info]}), a few entries of each kind
ENTRIES = [
    {"prompt_en": "In a still frame, a stop sign", "dimension": ["temporal_flickering"]},
    {"prompt_en": "a bird and a cat", "dimension": ["multiple_objects"],
     "auxiliary_info": {"multiple_objects": {"object": "bird and cat"}}},
    {"prompt_en": "a person swimming in ocean", "dimension": ["subject_consistency", "dynamic_degree",
                                                              "motion_smoothness"]},
    {"prompt_en": "alley", "dimension": ["scene", "background_consistency"],
     "auxiliary_info": {"scene": {"scene": {"scene": "alley"}}}},
    {"prompt_en": "Close up of grapes on a rotating table.", "dimension": ["overall_consistency",
                                                                          "aesthetic_quality", "imaging_quality"]},
    {"prompt_en": "a toilet, frozen in time", "dimension": ["temporal_flickering"]},
    {"prompt_en": "alley", "dimension": ["scene"]},  # VBench's file repeats a few prompts
    {"prompt_en": "a red bicycle", "dimension": ["color"], "auxiliary_info": {"color": {"color": "red"}}},
]


@pytest.fixture()
def info(tmp_path):
    path = tmp_path / "VBench_full_info.json"
    path.write_text(json.dumps(ENTRIES))
    return path


def test_filter_by_dimension_keeps_the_file_order_once_each(info):
    entries = read_vbench_info(info)
    assert filter_prompts(entries, ["temporal_flickering"]) == ["In a still frame, a stop sign",
                                                                "a toilet, frozen in time"]
    assert filter_prompts(entries, ["motion_smoothness", "scene"]) == ["a person swimming in ocean", "alley"]
    assert len(filter_prompts(entries, [])) == 7  # all, "alley" once
    with pytest.raises(SuiteError, match="prompts.dimensions: subject not in the suite"):
        filter_prompts(entries, ["subject"])


def test_sampling_is_a_seeded_subset_in_suite_order():
    pool = [f"p{i}" for i in range(326)]
    a = sample_prompts(pool, 200, 0)
    assert a == sample_prompts(pool, 200, 0) and len(a) == len(set(a)) == 200
    assert a == [p for p in pool if p in set(a)]  # suite order
    assert sample_prompts(pool, 200, 1) != a
    assert sample_prompts(pool, 3, None) == ["p0", "p1", "p2"]  # no seed: the first ones (prompts.file's limit)
    assert sample_prompts(pool, 400, 0) == pool


def test_prompts_vbench_composes_and_loads_the_suite(compose_cfg, info):
    cfg = compose_cfg("prompts=vbench", f"prompts.vbench_info={info}", "prompts.limit=3", "prompts.sample_seed=7")
    prompts = load_prompts(cfg.prompts)
    table1 = ["In a still frame, a stop sign", "a person swimming in ocean", "alley",
              "Close up of grapes on a rotating table.", "a toilet, frozen in time"]  # the Table 1 dimensions' prompts
    assert len(prompts) == 3 and set(prompts) <= set(table1)
    assert prompts == load_prompts(cfg.prompts)


def test_each_record_names_its_suite_file_hash_and_sampling(compose_cfg, info, tmp_path, one_thread):
    cfg = compose_cfg("prompts=vbench", f"prompts.vbench_info={info}", "prompts.dimensions=[temporal_flickering]",
                      "prompts.limit=1", "prompts.sample_seed=3", "num_frames=8", "height=32", "width=32",
                      "num_inference_steps=1", "method=direct", "progress=false")
    OmegaConf.update(cfg, "paths.output_root", str(tmp_path))
    (line,) = (run(cfg, tmp_path / "run") / "results.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert rec["prompt"] in ("In a still frame, a stop sign", "a toilet, frozen in time")
    src = rec["prompt_source"]
    assert src["sha256"] == hashlib.sha256(info.read_bytes()).hexdigest()
    assert (src["suite"], src["dimensions"], src["limit"], src["sample_seed"]) == ("vbench", ["temporal_flickering"],
                                                                                   1, 3)


@pytest.mark.parametrize("content,needle", [
    (None, "does not exist"),
    ("{not json", "not readable JSON"),
    ('{"prompt_en": "x"}', "expected a non-empty JSON list"),
    ('[{"prompt": "x", "dimension": []}]', "entry 0 is not"),
])
def test_a_missing_or_malformed_suite_fails_before_any_model_loads(compose_cfg, tmp_path, monkeypatch, content,
                                                                    needle):
    import freelong.models.base as base

    path = tmp_path / "info.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setattr(base, "build_backbone", lambda *a, **k: pytest.fail("backbone built before the suite"))
    cfg = compose_cfg("prompts=vbench", f"prompts.vbench_info={path}")
    with pytest.raises(ConfigError, match=needle) as info_:
        run(cfg, tmp_path / "run")
    assert "\n" not in str(info_.value)


def test_the_installed_package_is_found_without_importing_it(tmp_path, monkeypatch, info):
    pkg = tmp_path / "site" / "vbench"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing vbench pulls in its heavy dependencies')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "vbench", raising=False)
    with pytest.raises(SuiteError, match="pip install vbench"):
        locate_vbench_info()
    (pkg / "VBench_full_info.json").write_bytes(info.read_bytes())
    assert locate_vbench_info() == pkg / "VBench_full_info.json"
    assert "vbench" not in sys.modules
