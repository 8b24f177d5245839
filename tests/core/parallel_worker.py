"""Worker of tests/core/test_parallel.py, run as ``python -m torch.distributed.run --nproc_per_node 2 ... OUT``.

Rank 0 first samples every method in one process (the reference), then every rank samples them again with the
tiny Wan split over the ranks (Ulysses); rank 0 saves both, the refusal message and the exchange round trip.
"""

from __future__ import annotations

import sys

import torch

from freelong import LongVideoPipeline, get_method, load_backbone, parallel

# Wan-sized windows for 9 latent frames (33 video frames); FreeLong++ is bound to wan_tiny's 6 native latent frames.
METHODS = {
    "direct": {},
    "freelong": {"window": 5},
    "freelong_pp": {},
    "freenoise": {"window": 5, "stride": 2},
    "sliding_window": {"window": 5, "stride": 2},
    "riflex": {"k": 1},  # the fastest temporal component: a large change on the tiny RoPE
    # TSA on block 0, VRPR on block 1, tiers scaled to 9 frames: re-encoded positions over the whole video
    "freeloc": {"tsa_layers": [0], "tsa_window_1": 2, "tsa_window_2": 5, "vrpr_window_1": 2, "vrpr_window_2": 4,
                "vrpr_group_1": 2, "vrpr_group_2": 3, "clip": 4, "sink_group": 2, "sink_window": 3},
}
SHAPE = {"num_frames": 33, "height": 32, "width": 48}  # 9 x 2 x 3 = 54 latent tokens, 2 heads


# A two-prompt video: latent frames cross-attend to their own prompt (Wan's per-frame text), frames cut by the split.
MULTI_PROMPT = [{"prompt": "a red fox runs", "frames": 17}, {"prompt": "a blue boat sails", "frames": 16}]


def sample_all(backbone) -> dict[str, torch.Tensor]:
    out = {}
    for name, params in METHODS.items():
        pipe = LongVideoPipeline(backbone, get_method(name, **params), progress=False)
        out[name] = pipe("a red fox runs", **SHAPE, num_inference_steps=2, seed=3, output_type="latent")
    pipe = LongVideoPipeline(backbone, get_method("freelong", window=5), progress=False)
    out["multi_prompt"] = pipe(MULTI_PROMPT, **SHAPE, num_inference_steps=2, seed=3, output_type="latent")
    out["enable"] = through_enable(split=parallel.context_degree(backbone.unet) > 1)
    return out


def through_enable(split: bool) -> torch.Tensor:
    """FreeLong through ``freelong.enable`` in diffusers' own, unmodified WanPipeline (split: the pipeline's
    transformer split over the ranks by ``enable_context_parallel(pipe, N)``)."""
    from diffusers import WanPipeline

    import freelong

    backbone = load_backbone("wan_tiny")
    pipe = WanPipeline(**backbone.components)
    pipe.set_progress_bar_config(disable=True)
    if split:
        parallel.enable_context_parallel(pipe, parallel.world_size())
        if parallel.context_degree(pipe.transformer) != parallel.world_size():
            raise RuntimeError("the pipeline's transformer was not split")
    cond, uncond = backbone.encode_text(["a red fox runs"]), backbone.encode_text([""])
    with freelong.enable(pipe, "freelong", window=5, trained_frames=21) as fl:
        latents = freelong.prepare_latents(pipe, fl.method, generator=torch.Generator().manual_seed(2),
                                           trained_frames=21, **SHAPE)
        return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, latents=latents, num_inference_steps=2,
                    guidance_scale=5.0, output_type="latent", **SHAPE).frames


def refusal(backbone) -> str:
    """A processor stripped of its parallel configuration must refuse the token shard."""
    handle = backbone.attach(get_method("freelong", window=5))
    try:
        for block in backbone.unet.blocks:
            block.attn1.processor._parallel_config = None
        x = torch.randn(1, 4, 9, 4, 6, generator=torch.Generator().manual_seed(0))
        cond = backbone.encode_text(["a red fox runs"])
        try:
            backbone.predict_noise(x, torch.tensor(500.0), cond, None, 1.0)
        except RuntimeError as err:
            return str(err)
        return ""
    finally:
        handle.detach()


def rope_shard_matches(split, whole) -> bool:
    """RIFLEx's edited RoPE on this rank's rows equals this rank's share of the one-process table."""
    method = get_method("riflex", **METHODS["riflex"])
    x = torch.zeros(1, 4, 9, 4, 6)
    with split.attach(method), whole.attach(method):
        mine = split.unet.rope(x)
        full = whole.unet.rope(x)
        edited = not torch.equal(full[0], whole.unet.rope.inner(x)[0])
    n, r = parallel.world_size(), parallel.rank()
    return edited and all(torch.equal(a, b.chunk(n, dim=1)[r]) for a, b in zip(mine, full))


def bare_forward(backbone) -> torch.Tensor:
    """One guided prediction of the transformer with diffusers' own processors (no method attached)."""
    x = torch.randn(1, 4, 9, 4, 6, generator=torch.Generator().manual_seed(1))
    cond = backbone.encode_text(["a red fox runs"])
    return backbone.predict_noise(x, torch.tensor(700.0), cond, backbone.encode_text([""]), 5.0)


def main(path: str) -> None:
    torch.set_num_threads(1)
    parallel.init_process_group()
    group = torch.distributed.group.WORLD
    x = torch.randn(2, 6, 4, 3, generator=torch.Generator().manual_seed(parallel.rank()))
    round_trip = torch.equal(parallel.heads_to_seq(parallel.seq_to_heads(x, group), group), x)
    whole = load_backbone("wan_tiny")
    reference = sample_all(whole) if parallel.is_main_process() else {}
    reference["bare"] = bare_forward(whole)
    backbone = load_backbone("wan_tiny")
    parallel.enable_context_parallel(backbone, parallel.world_size())
    split = sample_all(backbone)
    split["bare"] = bare_forward(backbone)
    message = refusal(backbone)
    rope_ok = [None] * parallel.world_size()
    torch.distributed.all_gather_object(rope_ok, rope_shard_matches(backbone, whole))
    # methods attached before enable_parallelism get the configuration from diffusers
    late = load_backbone("wan_tiny")
    handle = late.attach(get_method("sliding_window", window=5, stride=2))
    parallel.enable_context_parallel(late, parallel.world_size())
    late_config = all(b.attn1.processor._parallel_config is not None for b in late.unet.blocks)
    handle.detach()
    if parallel.is_main_process():
        torch.save({"reference": reference, "split": split, "refusal": message, "round_trip": round_trip,
                    "late_config": late_config, "rope_shards": rope_ok,
                    "degree": parallel.context_degree(backbone.unet)}, path)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
