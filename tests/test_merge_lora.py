"""merge_lora.py against peft's own merge_and_unload (float32), with a real PEFT adapter on the tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from checkpoint_io import CheckpointError
from helpers import load_state
from merge_lora import merge_lora

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_adapter(base_dir, out_dir, seed, **lora_options):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"],
                        init_lora_weights=False, **lora_options)  # random A and B: a non-zero update
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out_dir, save_embedding_layers=True)  # peft's default with embeddings adapted
    return out_dir


def peft_merged_state(base_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return {n: t.detach() for n, t in PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().state_dict().items()}


@pytest.mark.parametrize("options", [
    {},
    {"use_rslora": True, "rank_pattern": {"down_proj": 2}, "alpha_pattern": {"v_proj": 3}},
], ids=["plain", "rslora+patterns"])
def test_merge_matches_peft_merge_and_unload(tiny_model, tmp_path, options):
    adapter = make_adapter(tiny_model, tmp_path / "adapter", seed=0, **options)
    n = merge_lora(tiny_model, adapter, tmp_path / "merged", quiet=True)
    assert n == 2 * 2 + 2 + 1  # q_proj and v_proj in 2 layers, down_proj in 2 layers, embed_tokens

    merged, base = load_state(tmp_path / "merged"), load_state(tiny_model)
    reference = peft_merged_state(tiny_model, adapter)
    assert sorted(merged) == sorted(base)
    changed = 0
    for name, tensor in merged.items():
        assert tensor.dtype == base[name].dtype == torch.bfloat16
        # peft merges in float32 here; our result is that, cast once to the base's dtype.
        assert torch.equal(tensor, reference[name].to(torch.bfloat16)), name
        changed += not torch.equal(tensor, base[name])
    assert changed == n
    assert json.loads((tmp_path / "merged" / "config.json").read_text()) == \
        json.loads((Path(tiny_model) / "config.json").read_text())


def test_merged_model_computes_what_peft_merge_and_unload_computes(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = make_adapter(tiny_model, tmp_path / "adapter", seed=1)
    subprocess.run([sys.executable, "merge_lora.py", "--base_model", str(tiny_model), "--lora_adapter", str(adapter),
                    "--output_dir", str(tmp_path / "merged")], cwd=REPO_ROOT, check=True, timeout=300,
                   capture_output=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    # peft merges in float32; stored in the base's dtype (bf16) that is what a merged checkpoint holds.
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), adapter)
    theirs = peft.merge_and_unload().eval()
    with torch.no_grad():
        for param in theirs.parameters():
            param.copy_(param.to(torch.bfloat16))
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(tmp_path / "merged")("The passage says that the", return_tensors="pt")
    with torch.no_grad():
        logits = [m(**ids).logits for m in (ours, theirs, base)]
    assert torch.equal(logits[0], logits[1])
    assert not torch.allclose(logits[0], logits[2], atol=1e-3)  # the adapter really changes what the model computes
    generated = [m.generate(**ids, max_new_tokens=8, do_sample=False) for m in (ours, theirs)]
    assert torch.equal(generated[0], generated[1]) and generated[0].shape[1] == ids["input_ids"].shape[1] + 8


def test_refuses_what_it_cannot_merge_exactly(tiny_model, tiny_model_tied, tmp_path):
    adapter = make_adapter(tiny_model, tmp_path / "adapter", seed=2)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(CheckpointError, match="DoRA"):
        merge_lora(tiny_model, adapter, tmp_path / "out", quiet=True)
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(CheckpointError, match=r"do not fit the base weight"):
        merge_lora(tiny_model, adapter, tmp_path / "out", quiet=True)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="is not a PEFT adapter dir"):
        merge_lora(tiny_model, tiny_model_tied, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
