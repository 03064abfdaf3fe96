"""Per-tensor statistics of a skill vector, streamed: what RL changed, where, and how much.

    python -m analysis.extract_delta --grpo_model RL --base_model BASE --output stats.csv
    python -m analysis.extract_delta --skill_vector skill.safetensors --output stats.json
    python -m analysis.extract_delta --skill_vector skill.safetensors --base_model BASE --output stats.csv

For each tensor: layer index, module type, numel, ||delta||, ||base|| and ||delta|| / ||base|| (when
the base model is known), mean |delta|, max |delta| and the share of entries with
|delta| <= --near_zero. The output (CSV or JSON by suffix) has one row per tensor; a per-module
summary is printed. `analysis.heatmap` draws the rows as a layers x module-types heatmap.
Tensors are read chunk by chunk (checkpoint_io), so any model size works.
"""

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint_io import (CHUNK_ELEMENTS, CheckpointReader, effective_names, one_line_errors, read_buffers,
                           read_chunk)
from inherit_weight import SkillSource

STAT_FIELDS = ["name", "layer", "module", "numel", "l2", "base_l2", "rel_l2", "mean_abs", "max_abs", "near_zero_frac"]
LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def layer_and_module(name):
    """('model.layers.3.self_attn.q_proj.weight') -> (3, 'q_proj'); biases keep '.bias'; others layer None.

    Module types: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, input_layernorm,
    post_attention_layernorm (+ '.bias' variants); outside the layers: embed_tokens, norm, lm_head.
    """
    match = LAYER_RE.search(name)
    rest = match.group(2) if match else name.removeprefix("model.")
    parts = rest.split(".")
    kind = parts[-1] if parts[-1] in ("weight", "bias") else ""
    module = parts[-2] if kind and len(parts) > 1 else parts[-1]
    if kind == "bias":
        module += ".bias"
    return (int(match.group(1)) if match else None), module


def iter_delta(skill, name):
    """Yield (start, end, float32 chunk of the skill) over one tensor of a SkillSource."""
    inputs, total = skill.inputs(name), skill.info(name).numel
    buffers = read_buffers([(name, total, inputs)])
    out, scratch = torch.empty(CHUNK_ELEMENTS), torch.empty(CHUNK_ELEMENTS)
    for start in range(0, total, CHUNK_ELEMENTS):
        end = min(start + CHUNK_ELEMENTS, total)
        blocks = read_chunk(inputs, start, end, buffers)
        yield start, end, skill.delta(blocks, out[: end - start], scratch[: end - start])


def delta_statistics(source, base=None, near_zero=1e-8, quiet=False):
    """One dict per tensor (STAT_FIELDS). `base`: a CheckpointReader for relative norms (optional)."""
    base32 = torch.empty(CHUNK_ELEMENTS, dtype=torch.float32)
    buffer = torch.empty(CHUNK_ELEMENTS * 8, dtype=torch.uint8)
    base_names = effective_names(base) if base is not None else None
    rows = []
    for name in tqdm(source.vector_names(), desc="delta statistics", unit="tensor", disable=quiet, file=sys.stderr):
        if not source.info(name).dtype.is_floating_point:
            continue
        sumsq = base_sumsq = abs_sum = 0.0
        max_abs, near = 0.0, 0
        for start, end, delta in iter_delta(source, name):
            sumsq += float(torch.dot(delta, delta))
            absd = delta.abs_()  # in place: delta is not needed any more
            abs_sum += float(absd.sum(dtype=torch.float64))
            max_abs = max(max_abs, float(absd.max()))
            near += int((absd <= near_zero).sum())
            if base_names is not None:
                b = base32[: end - start]
                b.copy_(base.read_into(base_names[name], start, end, buffer))
                base_sumsq += float(torch.dot(b, b))
        numel = source.info(name).numel
        layer, module = layer_and_module(name)
        l2, base_l2 = sumsq ** 0.5, (base_sumsq ** 0.5 if base_names is not None else None)
        rows.append(dict(name=name, layer=layer, module=module, numel=numel, l2=l2, base_l2=base_l2,
                         rel_l2=(l2 / base_l2 if base_l2 else None), mean_abs=abs_sum / max(numel, 1),
                         max_abs=max_abs, near_zero_frac=near / max(numel, 1)))
    return rows


def write_rows(rows, output):
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".json":
        output.write_text(json.dumps(rows, indent=1) + "\n")
    else:
        with open(output, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=STAT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)


def read_rows(path):
    """Rows written by write_rows, with numbers as numbers and empty cells as None."""
    path = Path(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in STAT_FIELDS[1:]:
            if key != "module":
                row[key] = None if row[key] in ("", None) else (int(row[key]) if key in ("layer", "numel")
                                                                 else float(row[key]))
    return rows


def module_summary(rows):
    """Per module type: total ||delta|| (root of summed squares) and its share of the whole vector."""
    sumsq = defaultdict(float)
    for row in rows:
        sumsq[row["module"]] += row["l2"] ** 2
    total = sum(sumsq.values()) or 1.0
    return sorted(((m, s ** 0.5, s / total) for m, s in sumsq.items()), key=lambda x: -x[1])


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpo_model", help="RL result (with --base_model: the vector is rl - base)")
    parser.add_argument("--base_model", help="the model RL started from; with --skill_vector: for relative norms")
    parser.add_argument("--skill_vector", help="a saved skill vector (calc_delta_and_save.py)")
    parser.add_argument("--output", required=True, help="stats file: .csv or .json")
    parser.add_argument("--near_zero", type=float, default=1e-8, help="|delta| at or below this counts as near zero")
    args = parser.parse_args(argv)
    if Path(args.output).suffix not in (".csv", ".json"):
        parser.error("--output must end in .csv or .json")
    if args.skill_vector:
        source = SkillSource(skill_vectors=[args.skill_vector])
        base = CheckpointReader(args.base_model) if args.base_model else None
    else:
        source = SkillSource(args.grpo_model, args.base_model)
        base = source.streams[1]
    rows = delta_statistics(source, base, args.near_zero)
    write_rows(rows, args.output)
    total = sum(r["l2"] ** 2 for r in rows) ** 0.5
    print(f"{len(rows)} tensors, ||skill|| = {total:.6g}; statistics written to {args.output}")
    for module, l2, share in module_summary(rows):
        print(f"  {module:28s} ||delta|| = {l2:10.4g}  ({100 * share:5.1f}% of ||skill||^2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
