"""The DiT families' diffusers-format folder loaders read back what diffusers' save_pretrained wrote (tiny parts)."""

import json

import pytest
import torch

from freelong.models.cogvideox.backbone import load_cogvideox_parts, tiny_cogvideox_parts
from freelong.models.spec import load_model_config
from freelong.models.wan.backbone import load_wan_parts, tiny_wan_parts


@pytest.mark.parametrize("model,make,load", [("wan_tiny", tiny_wan_parts, load_wan_parts),
                                             ("cogvideox_5b_tiny", tiny_cogvideox_parts, load_cogvideox_parts)])
def test_folder_loader_reads_back_every_part(tmp_path, model, make, load):
    transformer, vae, text_encoder, tokenizer = make(load_model_config(model))
    for sub, part in {"transformer": transformer, "vae": vae, "text_encoder": text_encoder,
                      "tokenizer": tokenizer}.items():
        part.save_pretrained(tmp_path / sub)
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 1000}))
    got = load(tmp_path, torch.float16)
    t2, vae2, te2, tok2, sched = got
    assert sched == {"num_train_timesteps": 1000}
    assert t2.dtype == torch.float16 and te2.dtype == torch.float16
    expected_vae = torch.float32 if model == "wan_tiny" else torch.float16  # Wan's VAE stays fp32 (its model card)
    assert next(vae2.parameters()).dtype == expected_vae
    for ours, theirs in ((transformer, t2), (vae, vae2), (text_encoder, te2)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k].to(b[k].dtype), b[k]) for k in a)
    assert tok2("a red fox").input_ids == tokenizer("a red fox").input_ids
