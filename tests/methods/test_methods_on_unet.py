"""Every method on the real (tiny) LaVie UNet: attach/detach, and equivalence at the native length."""

import pytest
import torch
from helpers import attach

from freelong import available_methods, get_method
from freelong.attention.context import CallContext
from freelong.attention.processor import TemporalAttnProcessor, temporal_attention_layers


@pytest.fixture(scope="module")
def unet(request):
    return request.getfixturevalue("lavie_tiny").unet


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 16, 8, 12, generator=g), torch.randn(2, 77, 32, generator=g)


def test_registry_lists_all_four_methods():
    assert {"direct", "sliding_window", "freenoise", "freelong"} <= set(available_methods())


@torch.no_grad()
@pytest.mark.parametrize("name", ["direct", "sliding_window", "freenoise", "freelong"])
def test_every_method_reduces_to_the_plain_model_at_16_frames(unet, inputs, name):
    x, ctx = inputs
    plain = unet(x, 500, ctx)
    method = get_method(name, **({} if name == "direct" else {"window": 16}))
    with attach(method, unet):
        out = unet(x, 500, ctx, call=CallContext(step_index=3, num_steps=10))
    torch.testing.assert_close(out, plain, atol=2e-6, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("name", ["sliding_window", "freenoise", "freelong"])
def test_methods_change_long_videos_and_detach_restores_exactly(unet, name):
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(1, 4, 24, 8, 12, generator=g), torch.randn(1, 77, 32, generator=g)
    before = unet(x, 500, ctx)
    originals = {n: layer.processor for n, layer in temporal_attention_layers(unet).items()}
    handle = attach(get_method(name, window=8), unet)
    during = unet(x, 500, ctx)
    handle.detach()
    after = unet(x, 500, ctx)
    assert not torch.allclose(during, before, atol=1e-4)
    assert torch.equal(after, before)
    assert all(layer.processor is originals[n] for n, layer in temporal_attention_layers(unet).items())
    assert all(type(p) is TemporalAttnProcessor for p in originals.values())
