"""The PaST operator: add skill vectors to target models, streaming and exactly.

For every tensor  out = target + Σ_k λ_k·v_k,  with v = rl − base (the GRPO result minus the exact
checkpoint GRPO started from) or a vector saved by calc_delta_and_save.py, in float32, cast once
to the target's dtype. The vectors are read once for all targets of a run and no model is loaded
whole: any model size runs in well under 1 GB of RAM, bound by the disk.

    python inherit_weight.py --grpo_model RL --base_model BASE \
        --target_models T1 T2 --output_dirs O1 O2 [--alpha 1.0]
    python inherit_weight.py --skill_vector skill.safetensors --target_models T1 --output_dirs O1
    python inherit_weight.py --skill_vector A.safetensors B.safetensors --alpha 0.7 0.3 ...  # skill arithmetic
    python inherit_weight.py ... --exclude 'embed_tokens|lm_head'   # keep the target's embeddings
    python inherit_weight.py ... --dry_run                          # checks and plan, writes nothing
    python inherit_weight.py ... --dry_run --export_mergekit_config past.yml   # the same transfer as a
        mergekit config (task_arithmetic), to run with: mergekit-yaml past.yml OUT

Inputs: HF model dirs (safetensors, sharded or not, or pytorch_model.bin) or verl checkpoints with
`actor/huggingface`. Every check runs before anything is written. Each output is a complete HF
model dir, renamed into place when complete; its shards' metadata `past_transfer` records the
target, the vectors (with fingerprints) and the λ used. `inherited_tensors(target, skill_vectors,
alphas)` yields the same tensors one by one, for an engine that updates its weights in place.
"""

import argparse
import json
import math
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from checkpoint_io import (EMBED_SUFFIX, LM_HEAD, CheckpointError, CheckpointReader, ModelOutput,
                           architecture, check_architecture, check_finite, check_output_paths, check_same_names,
                           check_same_tensors, computed_tensors, effective_names, numel, one_line_errors, parse_size,
                           usable_cores, write_models)

BLOCK_ELEMENTS = 2**18  # elements per float32 compute step: 1 MB buffers that stay in the CPU cache


class TransferError(CheckpointError):
    """A problem with the inputs of a transfer, found before anything is written."""


# ----------------------------------------------------------------------------------------------
# The math, one block at a time

def skill_delta(vector_blocks, alphas, out, scratch):
    """Σ_k alphas[k]·v_k of one block in float32, into `out` (returned); scratch is as long.
    vector_blocks[k] is (v,) for a saved vector or (rl, base) for v = rl − base."""
    for k, (block, alpha) in enumerate(zip(vector_blocks, alphas)):
        v = out if k == 0 else scratch
        v.copy_(block[0])
        if len(block) == 2:
            v.sub_(block[1])  # float32 − bf16 upcasts exactly: = rl.float() − base.float()
        if alpha != 1.0:
            v.mul_(alpha)
        if k:
            out.add_(v)
    return out


def add_delta(target, delta, work, out):
    """out = target + delta, summed in float32 (in `work`, as long as delta), cast once to out's dtype."""
    work.copy_(target)
    work.add_(delta)
    out.copy_(work)
    return work


# ----------------------------------------------------------------------------------------------
# The skill and the plan for each target (everything here runs before any output exists)

class SkillSource:
    """The skill to add, Σ_k alphas[k]·v_k: v = rl − base of two checkpoints, or saved vector files.

    `streams` are the checkpoints read; `stored[name]` their stored names for a tensor name as
    transformers sees the model; `terms[k]` the streams that make v_k."""

    def __init__(self, grpo_model=None, base_model=None, skill_vectors=(), alphas=1.0):
        files = [skill_vectors] if isinstance(skill_vectors, (str, Path)) else list(skill_vectors)
        if files and (grpo_model or base_model):
            raise TransferError("give either --skill_vector or --grpo_model/--base_model, not both")
        if files:
            labels = [f"skill vector {f}" for f in files]
            self.streams, self.terms = [CheckpointReader(f) for f in files], [(k,) for k in range(len(files))]
            self.provenance = [{"skill_vector": str(Path(f).resolve()), **{k: r.metadata[k] for k in (
                "fingerprint", "grpo_model", "base_model") if k in r.metadata}} for f, r in zip(files, self.streams)]
            self.description = " + ".join(labels)
        elif grpo_model and base_model:
            labels = [f"grpo model {grpo_model}", f"base model {base_model}"]
            self.streams, self.terms = [CheckpointReader(grpo_model), CheckpointReader(base_model)], [(0, 1)]
            for reader in self.streams:
                if reader.config is None:
                    raise TransferError(f"{reader.model_dir} has no config.json")
            self.provenance = [{"grpo_model": str(Path(grpo_model).resolve()),
                                "base_model": str(Path(base_model).resolve())}]
            self.description = f"rl {grpo_model} - base {base_model}"
        else:
            raise TransferError("need --grpo_model and --base_model (or --skill_vector FILE ...)")
        # Checked against every target: the models' configs, or what a saved vector recorded of them.
        self.architectures = [(label, architecture(r.config) if r.config else json.loads(r.metadata["architecture"]))
                              for label, r in zip(labels, self.streams) if r.config or "architecture" in r.metadata]
        for (label, arch), (other_label, other) in zip(self.architectures, self.architectures[1:]):
            check_architecture(arch, label, other, other_label)
        names = check_same_tensors(self.streams, labels)
        self.stored = {n: [names_k[n] for names_k in names] for n in names[0]}
        self.tied = all(r.tied for r in self.streams)  # then the skill's lm_head *is* its embedding delta
        alphas = [float(alphas)] if isinstance(alphas, (int, float)) else [float(a) for a in alphas]
        self.alphas = alphas * len(self.terms) if len(alphas) == 1 else alphas
        if len(self.alphas) != len(self.terms) or not all(math.isfinite(a) for a in self.alphas):
            raise TransferError(f"--alpha {alphas}: give one finite value per skill vector ({len(self.terms)}), "
                                "or one for all")
        for record, alpha in zip(self.provenance, self.alphas):
            record["alpha"] = alpha

    def info(self, name):
        return self.streams[0].info(self.stored[name][0])

    def vector_names(self):
        """Distinct tensors of the skill: a tied skill's lm_head is its embeddings, counted once."""
        return [n for n in self.stored if not (n == LM_HEAD and self.tied)]

    def inputs(self, name):
        """The streams' (reader, stored name) for `name`, as read_chunk and stream_chunks take them."""
        return list(zip(self.streams, self.stored[name]))

    def delta(self, blocks, out, scratch):
        """Σ_k alphas[k]·v_k in float32 from one block of every stream (read_chunk's views)."""
        return skill_delta([tuple(blocks[s] for s in term) for term in self.terms], self.alphas, out, scratch)

    def close(self):
        for reader in self.streams:
            reader.close()


@dataclass
class TargetPlan:
    reader: CheckpointReader
    output_dir: Path
    untie: bool                                  # write lm_head and tie_word_embeddings=false
    sources: dict = field(default_factory=dict)  # output name -> stored target tensor name
    apply: dict = field(default_factory=dict)    # output name -> leading elements receiving the skill
    excluded: list = field(default_factory=list)
    embeddings_note: str = ""

    @property
    def nbytes(self):
        return sum(self.reader.info(s).nbytes for s in self.sources.values())


def plan_target(skill, target_dir, output_dir, exclude, shared_vocab_rows):
    """What transfer() does to one target; `exclude` is the --exclude regex (a string) or None."""
    try:
        exclude = re.compile(exclude) if exclude else None
    except re.error as e:
        raise TransferError(f"--exclude {exclude!r} is not a valid regular expression: {e}") from None
    target = CheckpointReader(target_dir)
    if target.config is None:
        raise TransferError(f"target {target.model_dir} has no config.json; an output needs the target's config")
    for label, arch in skill.architectures:
        check_architecture(arch, label, target.config, f"target {target.model_dir}")
    target_names = effective_names(target)
    check_same_names(skill.stored, target_names, skill.description, f"target {target_dir}")
    excluded = [n for n in target_names if exclude is not None and exclude.search(n)]
    # A tied target can only receive a separate lm_head delta by being untied in the output.
    untie = target.tied and LM_HEAD in target_names and not skill.tied and LM_HEAD not in excluded
    plan = TargetPlan(target, Path(output_dir) if output_dir else None, untie, excluded=excluded)
    for name, stored_name in target_names.items():
        if name == LM_HEAD and target.tied and not untie:
            if name in target.tensors:  # a stale lm_head of a tied target: transformers ignores it; keep its bytes
                plan.sources[name], plan.apply[name] = name, 0
            continue  # otherwise it stays tied: lm_head is not stored, it follows the embeddings
        plan.sources[name] = stored_name
        t_info, v_info = target.info(stored_name), skill.info(name)
        if name in excluded or not t_info.dtype.is_floating_point:
            plan.apply[name] = 0
        elif not v_info.dtype.is_floating_point:
            raise TransferError(f"{name}: the skill vector tensor has non-float dtype {v_info.dtype}")
        elif v_info.shape == t_info.shape:
            plan.apply[name] = t_info.numel
        elif (len(v_info.shape) == len(t_info.shape) >= 1 and v_info.shape[1:] == t_info.shape[1:]
                and (name.endswith(EMBED_SUFFIX) or name == LM_HEAD)):
            v_rows, t_rows = v_info.shape[0], t_info.shape[0]
            shared = min(v_rows, t_rows)
            what = (f"rows {shared}..{t_rows - 1} exist only in the target" if t_rows > v_rows
                    else f"rows {shared}..{v_rows - 1} exist only in the skill vector")
            if not shared_vocab_rows:
                raise TransferError(
                    f"vocabulary mismatch in {name}: skill vector has {v_rows} rows, target {target_dir} has "
                    f"{t_rows}; {what}. Pass --shared_vocab_rows to apply the vector to rows 0..{shared - 1} only "
                    f"(the target's other rows stay untouched) if token ids 0..{shared - 1} mean the same in both "
                    f"tokenizers, or --exclude to leave this tensor as the target's.")
            plan.apply[name] = shared * numel(t_info.shape[1:])
        else:
            raise TransferError(f"{name}: skill vector has shape {list(v_info.shape)} but target {target_dir} has "
                                f"{list(t_info.shape)}")
    plan.embeddings_note = (
        "target was tied but the source models are not: the output is UNTIED (tie_word_embeddings=false) and "
        "stores lm_head = target embeddings + lm_head delta" if untie else
        "tied embeddings kept tied: the embedding delta also acts as the lm_head delta" if target.tied and skill.tied
        else "tied target kept tied: lm_head is excluded, the embeddings follow --exclude" if target.tied else
        "source models are tied: the target's own lm_head received the embedding delta" if skill.tied else
        "untied embeddings: lm_head and embeddings each received their own delta")
    return plan


# ----------------------------------------------------------------------------------------------
# The transfer: out_j = target_j + Σ_k α_k·v_k for every target j of a run, chunk by chunk

class Transfer:
    """The computation of one run, for checkpoint_io's pipelines: `tensors()` says what to read,
    `compute` turns one chunk of the skill's and the targets' tensors into the outputs' chunks.

    In stream_chunks, where torch runs on one thread (its OpenMP workers would spin against the
    pipeline's reader and writer threads), a chunk's blocks are split into contiguous runs, one per
    usable core, computed in worker threads (torch releases the GIL) with their own buffers; elsewhere
    (computed_tensors) torch's own threads use the cores. Each element sees the same operations either
    way and the statistics are summed in block order, so nothing depends on the core count. Close it
    (or use `with`) to stop the workers."""

    def __init__(self, skill, plans):
        self.skill, self.plans = skill, plans
        self.threads = usable_cores()
        self.buffers = [tuple(torch.empty(BLOCK_ELEMENTS) for _ in range(3)) for _ in range(self.threads)]
        self.pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None
        self.sumsq, self.changed = [0.0] * len(plans), [set() for _ in plans]

    def tensors(self):
        """(name, numel, inputs): the skill's streams (read only when some target receives the tensor),
        then one stream per target; every tensor of any output, in the first target's order."""
        for name in dict.fromkeys(n for plan in self.plans for n in plan.sources):
            wanted = any(plan.apply.get(name, 0) for plan in self.plans)
            vector = self.skill.inputs(name) if wanted else [None] * len(self.skill.streams)
            targets = [(p.reader, p.sources[name]) if name in p.sources else None for p in self.plans]
            yield name, max(r.info(s).numel for r, s in filter(None, targets)), vector + targets

    def compute(self, name, start, end, blocks, outs):
        vector, targets = blocks[:len(self.skill.streams)], blocks[len(self.skill.streams):]
        length = vector[0].numel() if vector[0] is not None else 0
        results, applied = [], []
        for plan, t, out in zip(self.plans, targets, outs):
            a = 0 if t is None else max(0, min(plan.apply.get(name, 0) - start, length))
            results.append(None if t is None else out[: t.numel() * t.element_size()])
            applied.append(a)
            if t is not None and a < t.numel():  # excluded tensors, extra vocabulary rows: the target's bytes
                if t.dtype.is_floating_point:
                    check_finite(t[a:], f"{name} (target {plan.reader.path})")
                results[-1][a * t.element_size():].copy_(t.view(torch.uint8)[a * t.element_size():])
        starts = list(range(0, max(applied), BLOCK_ELEMENTS))
        per_run = max(1, -(-len(starts) // (self.threads if torch.get_num_threads() == 1 else 1)))
        runs = [(starts[i: i + per_run], buffers) for i, buffers in zip(range(0, len(starts), per_run), self.buffers)]
        args = (name, start, vector, targets, applied, results)
        futures = [self.pool.submit(self.compute_blocks, *args, *run) for run in runs[1:]]
        try:
            sums = [self.compute_blocks(*args, *runs[0])] if runs else []
        finally:  # every worker is done with this chunk's buffers before they are passed on
            wait(futures)
        for block_sums in sums + [f.result() for f in futures]:
            for j, value in block_sums:
                self.sumsq[j] += value
                if value > 0:
                    self.changed[j].add(name)
        return results

    def compute_blocks(self, name, start, vector, targets, applied, results, block_starts, buffers):
        """out_j = target_j + delta on the blocks at `block_starts`; [(target j, Σ delta²)] in block order."""
        delta_buffer, scratch, work_buffer = buffers
        sums = []
        for bs in block_starts:
            be = min(bs + BLOCK_ELEMENTS, max(applied))
            delta = self.skill.delta([v[bs:be] for v in vector], delta_buffer[: be - bs], scratch[: be - bs])
            sumsq = {}
            for j, (plan, t, a) in enumerate(zip(self.plans, targets, applied)):
                if a <= bs:
                    continue
                e = min(be, a)
                out = results[j].view(t.dtype)[bs:e]
                work = add_delta(t[bs:e], delta[: e - bs], work_buffer[: e - bs], out)  # the one cast
                check_finite(work, f"{name} (target {plan.reader.path}, elements {start + bs}..{start + e})")
                if out.dtype not in (torch.float32, torch.bfloat16) and not torch.isfinite(out).all():
                    raise FloatingPointError(f"{name}: the result overflows {out.dtype} (target {plan.reader.path})")
                if e - bs not in sumsq:
                    sumsq[e - bs] = float(torch.dot(delta[: e - bs], delta[: e - bs]))
                sums.append((j, sumsq[e - bs]))
        return sums

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def inherited_tensors(target_model, skill_vectors, alphas=1.0, exclude=None, shared_vocab_rows=False):
    """(name, tensor) for every stored tensor of target + Σ_k alphas[k]·skill_vectors[k], in the target's
    dtype, one tensor at a time: exactly what inherit_weight.py writes with these options.
    skill_vectors are saved vector files, alphas one per vector (or one for all). Every check runs in
    this call, before the first tensor; a tied target that the vectors would untie is refused (a
    loaded tied model cannot hold a separate lm_head)."""
    return stream_inherited(*plan_inherited(target_model, skill_vectors, alphas, exclude, shared_vocab_rows))


def plan_inherited(target_model, skill_vectors, alphas=1.0, exclude=None, shared_vocab_rows=False):
    """inherited_tensors' checks, reading headers only: (skill, plan), whose readers the caller
    closes (stream_inherited does at its end; check_inherited right away)."""
    skill = SkillSource(skill_vectors=skill_vectors, alphas=alphas)
    try:
        plan = plan_target(skill, target_model, None, exclude, shared_vocab_rows)
    except BaseException:
        skill.close()
        raise
    if plan.untie:
        close_plan(skill, plan)
        raise TransferError(f"target {target_model} ties lm_head to its embeddings but the skill vector has its "
                            "own lm_head delta, which a loaded tied model cannot take: write the model with "
                            "inherit_weight.py (its output is untied) and load that, or exclude 'lm_head'")
    return skill, plan


def check_inherited(target_model, skill_vectors, alphas=1.0, exclude=None, shared_vocab_rows=False):
    """Run every check of inherited_tensors (a TransferError or CheckpointError if one fails) and
    read nothing else."""
    close_plan(*plan_inherited(target_model, skill_vectors, alphas, exclude, shared_vocab_rows))


def close_plan(skill, plan):
    skill.close()
    plan.reader.close()


def stream_inherited(skill, plan):
    """Yield (name, tensor) for every tensor `plan`'s output stores; closes the readers at the end."""
    try:
        layouts = {n: (plan.reader.info(s).dtype, plan.reader.info(s).shape) for n, s in plan.sources.items()}
        with Transfer(skill, [plan]) as run:
            yield from computed_tensors(run.tensors(), run.compute, layouts)
    finally:
        close_plan(skill, plan)


def transfer(skill, plans, max_shard_size="5GB", exclude=None, quiet=False):
    """Write every plan's output in one streaming pass; returns the per-target statistics."""
    outputs = [ModelOutput(plan.output_dir, [(n, plan.reader.info(s).dtype, plan.reader.info(s).shape)
                                             for n, s in plan.sources.items()], plan.reader.model_dir,
                           {"past_transfer": json.dumps({"target_model": str(plan.reader.path.resolve()),
                                                         "skill": skill.provenance, "exclude": exclude})},
                           {"tie_word_embeddings": False} if plan.untie else None) for plan in plans]
    t0 = time.perf_counter()
    with Transfer(skill, plans) as run, tqdm(total=sum(p.nbytes for p in plans), unit="B", unit_scale=True,
                                             desc="writing", disable=quiet, file=sys.stderr) as progress:
        write_models(outputs, run.tensors(), run.compute, parse_size(max_shard_size), progress.update)
    return [dict(seconds=time.perf_counter() - t0, tensors_changed=len(changed), skill_norm=sumsq ** 0.5)
            for sumsq, changed in zip(run.sumsq, run.changed)]


def mergekit_config(skill, plan, grpo_model, base_model, exclude, shared_vocab_rows):
    """The transfer as mergekit's task_arithmetic, a YAML text for `mergekit-yaml FILE OUT`:
    base + λ·(rl − base) + 1·(target − base) = target + λ·(rl − base), computed in float32."""
    refused = ("--skill_vector (mergekit merges models: give --grpo_model/--base_model)" if not grpo_model else
               "--exclude" if exclude else "--shared_vocab_rows" if shared_vocab_rows else
               "a tied target that the skill unties" if plan.untie else None)
    if refused:
        raise TransferError(f"--export_mergekit_config cannot express {refused}; export without it")
    dtypes = [plan.reader.info(s).dtype for s in plan.sources.values() if plan.reader.info(s).dtype.is_floating_point]
    out_dtype = str(max(set(dtypes), key=dtypes.count)).removeprefix("torch.")
    path = {role: json.dumps(str(reader.model_dir.resolve())) for role, reader in
            (("rl", skill.streams[0]), ("base", skill.streams[1]), ("target", plan.reader))}
    return (f"# inherit_weight.py's transfer as mergekit task_arithmetic: base + {skill.alphas[0]!r}·(rl − base) + "
            f"1·(target − base)\n# = target + {skill.alphas[0]!r}·(rl − base). Run: mergekit-yaml THIS_FILE OUT_DIR\n"
            f"merge_method: task_arithmetic\nbase_model: {path['base']}\nmodels:\n"
            f"  - model: {path['rl']}\n    parameters:\n      weight: {skill.alphas[0]!r}\n"
            f"  - model: {path['target']}\n    parameters:\n      weight: 1.0\n"
            f"dtype: float32\nout_dtype: {out_dtype}\n")


# ----------------------------------------------------------------------------------------------
# Entry point

def inherit(target_models, output_dirs, grpo_model=None, base_model=None, skill_vectors=(), alphas=1.0,
            exclude=None, overwrite=False, dry_run=False, shared_vocab_rows=False, max_shard_size="5GB",
            quiet=False, export_mergekit_config=None):
    """Write target + Σ_k alphas[k]·skill_k for every target; all checks run before anything is written.
    `export_mergekit_config`: also write the same transfer as a mergekit config there (one target).
    Returns one summary dict per target (the plan without numbers when dry_run)."""
    if len(target_models) != len(output_dirs) or not target_models:
        raise TransferError(f"{len(target_models)} target models but {len(output_dirs)} output dirs; "
                            "give one output dir per target")
    parse_size(max_shard_size)
    skill, plans = SkillSource(grpo_model, base_model, skill_vectors, alphas), []
    try:
        for target_dir, output_dir in zip(target_models, output_dirs):
            plans.append(plan_target(skill, target_dir, output_dir, exclude, shared_vocab_rows))
        inputs = [reader.path for reader in skill.streams] + [plan.reader.path for plan in plans]
        check_output_paths([plan.output_dir for plan in plans] + ([export_mergekit_config] if export_mergekit_config
                                                                  else []), inputs, overwrite)
        if export_mergekit_config:
            if len(plans) != 1:
                raise TransferError(f"--export_mergekit_config: {len(plans)} targets, but a mergekit config makes "
                                    "one output; export with one target per run")
            config = mergekit_config(skill, plans[0], grpo_model, base_model, exclude, shared_vocab_rows)
            Path(export_mergekit_config).write_text(config)
        results = [{} for _ in plans] if dry_run else transfer(skill, plans, max_shard_size, exclude, quiet)
        return [dict(target=str(p.reader.path), output=str(p.output_dir), alpha=skill.alphas,
                     tensors=len(p.sources), tensors_receiving=sum(1 for v in p.apply.values() if v),
                     excluded=sorted(p.excluded), bytes=p.nbytes, embeddings=p.embeddings_note, dry_run=dry_run, **r)
                for p, r in zip(plans, results)]
    finally:
        skill.close()
        for plan in plans:
            plan.reader.close()


def format_summary(s):
    alpha = s["alpha"][0] if len(s["alpha"]) == 1 else s["alpha"]
    if s["dry_run"]:
        return (f"[dry run] {s['target']} -> {s['output']}: {s['tensors']} tensors, {s['tensors_receiving']} would "
                f"receive alpha={alpha} * skill, excluded {len(s['excluded'])}, {s['bytes'] / 1e9:.3f} GB to write; "
                f"{s['embeddings']}")
    gbps = s["bytes"] / 1e9 / max(s["seconds"], 1e-9)
    return (f"{s['target']} -> {s['output']}: {s['tensors_changed']} of {s['tensors']} tensors changed, excluded "
            f"{len(s['excluded'])}, ||alpha*skill|| = {s['skill_norm']:.6g} (alpha={alpha}), {s['bytes'] / 1e9:.3f} GB "
            f"written in {s['seconds']:.1f} s ({gbps:.2f} GB/s); {s['embeddings']}")


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpo_model", help="the RL (GRPO) result: HF model dir or verl checkpoint dir")
    parser.add_argument("--base_model", help="the exact checkpoint RL started from")
    parser.add_argument("--skill_vector", nargs="+", default=[], metavar="FILE",
                        help="saved skill vectors (calc_delta_and_save.py) instead of rl/base; several are summed")
    parser.add_argument("--target_models", nargs="+", required=True, help="model dirs to add the skill to")
    parser.add_argument("--output_dirs", nargs="+", required=True, help="one new model dir per target")
    parser.add_argument("--alpha", nargs="+", type=float, default=[1.0],
                        help="scale lambda of each skill vector: one per vector, or one for all (default 1.0)")
    parser.add_argument("--exclude", help="regex: tensors whose names match keep the target's values "
                        "(e.g. 'embed_tokens|lm_head')")
    parser.add_argument("--shared_vocab_rows", action="store_true",
                        help="on a vocabulary-size mismatch, apply the vector to the shared leading rows only "
                        "(only when those token ids mean the same in both tokenizers)")
    parser.add_argument("--max_shard_size", default="5GB", help="output shard size (default 5GB, as huggingface_hub)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output dirs (after success)")
    parser.add_argument("--dry_run", action="store_true", help="run all checks and print the plan; write nothing "
                        "(but the --export_mergekit_config file)")
    parser.add_argument("--export_mergekit_config", metavar="FILE",
                        help="also write this transfer as a mergekit task_arithmetic config (YAML, one target; "
                        "run it with: mergekit-yaml FILE OUT_DIR)")
    args = parser.parse_args(argv)
    summaries = inherit(args.target_models, args.output_dirs, args.grpo_model, args.base_model,
                        args.skill_vector, args.alpha, args.exclude, args.overwrite, args.dry_run,
                        args.shared_vocab_rows, args.max_shard_size, export_mergekit_config=args.export_mergekit_config)
    for s in summaries:
        print(format_summary(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
