"""Merge a PEFT LoRA adapter into its base model: a full HF model dir in the base's dtype.

    python merge_lora.py --base_model BASE --lora_adapter ADAPTER_DIR --output_dir OUT

For users who trained stage-1/2 SFT with LoRA: the merged model is what the skill-transfer
operator (inherit_weight.py) and the evaluation expect. Each LoRA-adapted weight becomes
W + scaling * (B @ A), computed in float32 from the stored tensors and cast once to the base's
dtype (scaling = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora; rank_pattern and
alpha_pattern are honoured). Linear and embedding LoRA layers are supported; DoRA, LoRA biases
and modules_to_save are refused with an error. Tensors are processed one at a time, so memory
stays at a few tensors; the output dir is written under a temporary name and renamed at the end.
"""

import argparse
import math
import re
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint_io import (CHUNK_ELEMENTS, CheckpointError, CheckpointReader, ShardedWriter,
                           atomic_outputs, check_finite, check_output_paths, copy_model_files, one_line_errors,
                           read_json)

PEFT_PREFIX = "base_model.model."


def pattern_value(pattern, module_name, default):
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches a module-name suffix."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def read_adapter(adapter_dir):
    """A PEFT LoRA adapter dir: (config, reader, pairs, replacements).

    pairs: {base weight name: (A name, B name, kind, module)}; replacements: {base weight name:
    adapter tensor holding that layer's full weight (PEFT saves embeddings it adapted)}."""
    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.exists():
        raise CheckpointError(f"{adapter_dir} is not a PEFT adapter dir (no adapter_config.json)")
    config = read_json(config_file)
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{adapter_dir}: peft_type {config.get('peft_type')} is not LoRA")
    for key, bad, why in (("use_dora", True, "DoRA"), ("fan_in_fan_out", True, "fan_in_fan_out (Conv1D) layers")):
        if config.get(key) == bad:
            raise CheckpointError(f"{adapter_dir}: {why} is not supported; merge with peft's merge_and_unload()")
    if config.get("bias", "none") != "none":
        raise CheckpointError(f"{adapter_dir}: LoRA bias={config['bias']!r} is not supported (only 'none')")
    if config.get("modules_to_save"):
        raise CheckpointError(f"{adapter_dir}: modules_to_save {config['modules_to_save']} is not supported; "
                              "merge with peft's merge_and_unload()")
    weights = [adapter_dir / n for n in ("adapter_model.safetensors", "adapter_model.bin")
               if (adapter_dir / n).exists()]
    if not weights:
        raise CheckpointError(f"{adapter_dir}: no adapter_model.safetensors / adapter_model.bin")
    reader = CheckpointReader(weights[0])
    pairs, replacements = {}, {}
    for name in reader.names():
        if not name.startswith(PEFT_PREFIX):
            raise CheckpointError(f"{weights[0]}: unexpected tensor {name} (not a LoRA weight)")
        module = name[len(PEFT_PREFIX):]
        for a_suffix, b_suffix, kind in ((".lora_A.weight", ".lora_B.weight", "linear"),
                                         (".lora_embedding_A", ".lora_embedding_B", "embedding")):
            if module.endswith(a_suffix):
                module = module[: -len(a_suffix)]
                b_name = PEFT_PREFIX + module + b_suffix
                if b_name not in reader.tensors:
                    raise CheckpointError(f"{weights[0]}: {name} has no matching {b_name}")
                pairs[module + ".weight"] = (name, b_name, kind, module)
                break
        else:
            if module.endswith(".base_layer.weight"):
                # Saved with save_embedding_layers: the layer's weight as trained, used instead of the base's.
                replacements[module[: -len(".base_layer.weight")] + ".weight"] = name
            elif not (module.endswith(".lora_B.weight") or module.endswith(".lora_embedding_B")):
                raise CheckpointError(f"{weights[0]}: unsupported adapter tensor {name} (DoRA magnitude, bias or "
                                      "modules_to_save?); merge with peft's merge_and_unload()")
    for weight_name, name in replacements.items():
        if weight_name not in pairs:
            raise CheckpointError(f"{weights[0]}: {name} belongs to no LoRA layer; "
                                  "merge with peft's merge_and_unload()")
    return config, reader, pairs, replacements


def merged_weight(weight, a, b, kind, scaling, dtype):
    """W + scaling * (B @ A) in float32 (transposed for embeddings), cast once to `dtype`."""
    delta = b.float() @ a.float()
    if kind == "embedding":
        delta = delta.T
    return (weight.float() + delta * scaling).to(dtype)


def merge_lora(base_model, lora_adapter, output_dir, overwrite=False, quiet=False):
    """Write base + LoRA to output_dir; returns the number of merged weights."""
    output_dir = Path(output_dir)
    config, adapter, pairs, replacements = read_adapter(lora_adapter)
    with CheckpointReader(base_model) as base, adapter:
        if base.config is None:
            raise CheckpointError(f"{base.model_dir} has no config.json")
        check_output_paths([output_dir], [base_model, lora_adapter], overwrite)
        missing = sorted(set(pairs) - set(base.names()))
        if missing:
            raise CheckpointError(f"the adapter adapts weights the base model does not have: {missing[:5]} "
                                  f"(tied lm_head or another base model?)")
        scalings = {}
        for weight_name, (a_name, b_name, kind, module) in pairs.items():
            a_shape, b_shape = adapter.info(a_name).shape, adapter.info(b_name).shape
            rank = pattern_value(config.get("rank_pattern"), module, config["r"])
            alpha = pattern_value(config.get("alpha_pattern"), module, config["lora_alpha"])
            w_shape = base.info(weight_name).shape
            expected = (b_shape[0], a_shape[1]) if kind == "linear" else (a_shape[1], b_shape[0])
            if a_shape[0] != rank or b_shape[1] != rank or tuple(w_shape) != expected:
                raise CheckpointError(f"{module}: LoRA A {list(a_shape)} / B {list(b_shape)} (r={rank}) do not fit "
                                      f"the base weight {list(w_shape)}; is this the adapter's base model?")
            replaced = replacements.get(weight_name)
            if replaced and adapter.info(replaced).shape != w_shape:
                raise CheckpointError(f"{replaced} has shape {list(adapter.info(replaced).shape)}, the base's "
                                      f"{weight_name} {list(w_shape)}: resized vocabularies are not supported")
            scalings[weight_name] = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)

        entries = [(n, base.info(n).dtype, base.info(n).shape) for n in base.names()]
        buffer = torch.empty(CHUNK_ELEMENTS * 8, dtype=torch.uint8)
        with atomic_outputs([output_dir]) as [tmp], ShardedWriter(tmp, entries, 5 * 10**9) as writer:
            for name in tqdm(base.names(), desc="merging", unit="tensor", disable=quiet, file=sys.stderr):
                if name not in pairs:
                    for _, _, chunk in base.chunks(name, buffer):
                        writer.write(name, chunk.view(torch.uint8))
                    continue
                a_name, b_name, kind, _ = pairs[name]
                weight = adapter.get(replacements[name]) if name in replacements else base.get(name)
                merged = merged_weight(weight, adapter.get(a_name), adapter.get(b_name), kind, scalings[name],
                                       base.info(name).dtype)
                check_finite(merged, f"the merged {name}")
                writer.write(name, merged.reshape(-1).view(torch.uint8))
            writer.finish()
            copy_model_files(base.model_dir, tmp)
        return len(pairs)


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base_model", required=True, help="the model the adapter was trained on (HF dir)")
    parser.add_argument("--lora_adapter", required=True, help="PEFT adapter dir (adapter_config.json + weights)")
    parser.add_argument("--output_dir", required=True, help="new model dir for the merged model")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dir")
    args = parser.parse_args(argv)
    n = merge_lora(args.base_model, args.lora_adapter, args.output_dir, args.overwrite)
    print(f"merged {n} LoRA weights into {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
