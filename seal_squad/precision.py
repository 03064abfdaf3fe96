"""How much of the skill vector the served model keeps.

vLLM serves W + λ·v as inherit_weight.py wrote it: summed in float32, cast once to the base's
dtype. In bf16 (8 significant bits) an element whose update λ·v_e is below half a unit in the last
place of W_e rounds back to W_e, and RL deltas are small (GRPO at lr 1e-6), so part of the vector
may never reach the answers. `survival` measures it on the files vLLM loads: among the vector's
elements with λ·v_e != 0, the share whose served weight differs from the base weight in the
served dtype. A low share says: serve in float32 (SERVED_DTYPE=float32: start_servers.sh and
run_squad_pipeline.sh then write W + λ·v from a float32 copy of the base, `float32_copy`, and vLLM
serves it in float32). query_server.py measures it once per served model (kept in
SERVED/skill_survival.json), logs it and records it in the run JSON.
"""

import json
from pathlib import Path

import torch

from checkpoint_io import (CHUNK_ELEMENTS, CheckpointReader, ShardedWriter, atomic_outputs, copy_model_files,
                           effective_names, parse_size)
from utils import write_json_atomic

LOW_SURVIVAL = 0.5  # below this share, the report recommends float32 serving


def survival(base_model, served_model, skill_vector, alpha):
    """{"share", "survived", "nonzero", "served_dtypes", ...}: of the elements of the skill vector with
    alpha * v != 0 (float32), how many differ between the served model and the base model in the
    served dtype. Tensors the served model keeps from the base (inherit_weight.py --exclude) count
    as not surviving."""
    with CheckpointReader(base_model) as base, CheckpointReader(served_model) as served, \
            CheckpointReader(skill_vector) as vector:
        base_names, served_names = effective_names(base), effective_names(served)
        missing = [n for n in vector.names() if n not in base_names or n not in served_names]
        if missing:
            raise ValueError(f"{skill_vector}: tensor {missing[0]} (and {len(missing) - 1} more) is not in both "
                             f"{base_model} and {served_model}: not the vector of this served model")
        buffers = [torch.empty(CHUNK_ELEMENTS * 8, dtype=torch.uint8) for _ in range(3)]
        survived = nonzero = 0
        dtypes = set()
        for name in vector.names():
            served_name = served_names[name]
            dtype = served.info(served_name).dtype
            if not dtype.is_floating_point:
                continue
            dtypes.add(str(dtype).replace("torch.", ""))
            for start, end, v in vector.chunks(name, buffers[0]):
                moved = alpha * v.float() != 0
                w = base.read_into(base_names[name], start, end, buffers[1]).to(dtype)
                changed = served.read_into(served_name, start, end, buffers[2]) != w
                nonzero += int(moved.sum())
                survived += int((moved & changed).sum())
    return {"share": survived / nonzero if nonzero else 1.0, "survived": survived, "nonzero": nonzero,
            "served_dtypes": sorted(dtypes), "alpha": alpha, "base_model": str(base_model),
            "served_model": str(served_model), "skill_vector": str(skill_vector)}


def cached_survival(base_model, served_model, skill_vector, alpha):
    """survival(...), kept in SERVED/skill_survival.json and reused while it is for the same base,
    vector and alpha (a rebuilt served model is a new dir: remove it, and the file goes with it)."""
    cache = Path(served_model) / "skill_survival.json"
    if cache.is_file():
        kept = json.loads(cache.read_text(encoding="utf-8"))
        if (kept.get("base_model"), kept.get("skill_vector"), kept.get("alpha")) == (str(base_model), str(skill_vector), alpha):
            return kept
    result = survival(base_model, served_model, skill_vector, alpha)
    write_json_atomic(cache, result)
    return result


def report(result):
    """One line for the log; a recommendation to serve in float32 when the share is low."""
    line = (f"skill vector in the served model: {100 * result['share']:.1f}% of its {result['nonzero']:,} non-zero "
            f"elements (lambda {result['alpha']:g}) change the served {'/'.join(result['served_dtypes'])} weights")
    if result["share"] < LOW_SURVIVAL:
        line += (f". WARNING: below {100 * LOW_SURVIVAL:.0f}%, most of lambda * v rounds away in "
                 f"{'/'.join(result['served_dtypes'])}; serve W + lambda * v in float32 (SERVED_DTYPE=float32)")
    return line


def float32_copy(model_dir, out_dir, max_shard_size="5GB"):
    """A copy of the model with every floating-point tensor in float32 (exact for bf16/fp16): the
    base of a float32 served model, since inherit_weight.py writes W + λ·v in its target's dtype.
    Written beside out_dir and renamed into place when complete."""
    with CheckpointReader(model_dir) as reader:
        if reader.model_dir is None or reader.config is None:
            raise ValueError(f"{model_dir}: not a model dir with a config.json")
        layout = [(n, torch.float32 if reader.info(n).dtype.is_floating_point else reader.info(n).dtype,
                   reader.info(n).shape) for n in reader.names()]
        dtype_keys = [k for k in ("torch_dtype", "dtype") if k in reader.config] or ["torch_dtype"]
        buffer = torch.empty(CHUNK_ELEMENTS * 8, dtype=torch.uint8)
        with atomic_outputs([out_dir]) as (tmp,):
            with ShardedWriter(tmp, layout, parse_size(max_shard_size)) as writer:
                for name, dtype, _ in layout:
                    for _, _, chunk in reader.chunks(name, buffer):
                        writer.write(name, chunk.to(dtype).contiguous().view(torch.uint8))
                writer.finish()
            copy_model_files(reader.model_dir, tmp, {k: "float32" for k in dtype_keys})
