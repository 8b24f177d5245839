"""Methods are plugins: a second installed distribution adds one through the ``freelong.methods`` entry point.

The distribution is simulated as pip installs one: a ``<name>.dist-info`` folder (``METADATA`` +
``entry_points.txt``) beside its module on ``sys.path``, which is what ``importlib.metadata`` reads.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from freelong.methods import available_methods, get_method, method_class

PLUGIN = '''
from dataclasses import dataclass

from freelong.attention import TemporalAttnProcessor, global_attention
from freelong.methods import Method


class HalfAttention(TemporalAttnProcessor):
    """Half of the global attention output: visibly different, trivially checkable."""

    def __call__(self, q, k, v, *, bias, ctx):
        return 0.5 * global_attention(q, k, v, bias)


@dataclass
class Halved(Method):
    strength: float = 0.5

    def validate(self):
        if not 0 < self.strength <= 1:
            raise ValueError(f"method.strength must be in (0, 1], got {self.strength}")

    def processor(self):
        return HalfAttention()
'''


def make_distribution(root: Path) -> Path:
    (root / "halved_plugin.py").write_text(PLUGIN)
    info = root / "halved_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: halved-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[freelong.methods]\nhalved = halved_plugin:Halved\n")
    return root


def test_builtin_methods_come_from_this_package_entry_points():
    assert {"direct", "sliding_window", "freenoise", "freelong"} <= set(available_methods())
    assert method_class("freenoise").__module__ == "baselines.freenoise"
    assert method_class("freelong").__module__ == "freelong.methods.freelong"


@torch.no_grad()
def test_a_second_distribution_adds_a_method(tmp_path, monkeypatch, lavie_tiny, one_thread):
    monkeypatch.syspath_prepend(str(make_distribution(tmp_path)))
    assert "halved" in available_methods()
    method = get_method("halved", strength=1.0)
    assert type(method).__module__ == "halved_plugin" and method.name == "halved"
    with pytest.raises(ValueError, match="method.strength"):
        get_method("halved", strength=2.0)
    with pytest.raises(ValueError, match="unknown parameter"):
        get_method("halved", strenght=1.0)
    unet = lavie_tiny.unet
    x, ctx = torch.randn(1, 4, 6, 8, 12), torch.randn(1, 77, 32)
    plain = unet(x, 500, ctx)
    with lavie_tiny.attach(method):
        halved = unet(x, 500, ctx)
    assert not torch.allclose(plain, halved, atol=1e-4)
    torch.testing.assert_close(unet(x, 500, ctx), plain, atol=0, rtol=0)  # detached exactly


def test_a_plugin_method_is_a_hydra_option_without_a_yaml_file(tmp_path):
    """``method=halved`` composes (the plugin ships no conf/method/halved.yaml); a typo lists the options."""
    root = make_distribution(tmp_path)
    script = textwrap.dedent("""
        import sys
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf
        from freelong.app.config import CONF_DIR, register_configs
        register_configs()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=sys.argv[1:])
        print(OmegaConf.to_yaml(cfg.method))
    """)
    env_path = f"{root}"
    ok = subprocess.run([sys.executable, "-c", script, "method=halved", "method.strength=0.25"],
                        capture_output=True, text=True, env={**_env(), "PYTHONPATH": env_path})
    assert ok.returncode == 0, ok.stderr
    assert "name: halved" in ok.stdout and "strength: 0.25" in ok.stdout
    bad = subprocess.run([sys.executable, "-c", script, "method=halvd"], capture_output=True, text=True,
                         env={**_env(), "PYTHONPATH": env_path})
    assert bad.returncode != 0 and "halved" in bad.stderr and "freelong" in bad.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
