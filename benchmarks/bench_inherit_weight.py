"""Benchmark inherit_weight.py against the I/O floor and the original release's method.

Builds a synthetic checkpoint with real model shapes (random bf16 weights; base, rl = base + a
small delta, and targets), then runs each method in its own child process under
`/usr/bin/time -v` (peak RSS as the kernel counts it, page cache of memory-mapped files
included) and prints wall time, peak RSS and GB/s (bytes read + written per second), the median
over --repeats runs, and ratios against the I/O floor measured in the same run, once with a cold
and once with a warm page cache for the inputs (--cache):

  io_floor_1 / io_floor_4   read rl, base and the targets with `cat`, write each output as a plain
                            file copy + fsync (what any tool must do at least)
  original_bf16             the original release's method: load rl, base and the target with
                            transformers (default bf16), loop over named_parameters, save_pretrained
  original_fp32             the same loaded in float32 (exact arithmetic, writes a float32 model)
  operator_1 / operator_4   inherit_weight.py with 1 target and with 4 targets in one run
  baseline_1 / baseline_4   the same, run from another checkout (--baseline_repo DIR, e.g. a
                            `git worktree` of main), to see what a change does to speed; its
                            output is compared bit for bit with operator_1's

cold: every method starts with the page cache dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`
where the benchmark may write it, as root; else posix_fadvise DONTNEED on the benchmark's own
files; the table says which). warm: the inputs are read once before the method starts, so they
sit in the page cache, as right after training. Modes and methods are interleaved per
repetition so that noise from other processes spreads evenly. Needs /usr/bin/time (Debian:
apt-get install time).

    python benchmarks/bench_inherit_weight.py                   # Qwen2.5-1.5B shapes, 3 repetitions
    python benchmarks/bench_inherit_weight.py --cache warm --methods io_floor_1 operator_1 io_floor_4 operator_4
    python benchmarks/bench_inherit_weight.py --shapes 7b --methods io_floor_1 operator_1
    git worktree add /tmp/before main && python benchmarks/bench_inherit_weight.py \
        --methods io_floor_1 baseline_1 operator_1 --baseline_repo /tmp/before --repeats 5
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

SHAPES = {
    # Qwen2.5-1.5B(-Instruct): tied embeddings, 338 stored tensors, 3.09 GB in bf16.
    "1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    # Qwen2.5-7B(-Instruct): untied, 339 tensors, 15.2 GB in bf16.
    "7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}
METHODS = ["io_floor_1", "original_bf16", "original_fp32", "operator_1", "io_floor_4", "operator_4"]
BASELINE_METHODS = ["baseline_1", "baseline_4"]


def qwen2_tensors(cfg):
    """(name, shape) of a Qwen2 checkpoint in the order transformers stores them."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    out = [("model.embed_tokens.weight", (v, h))]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.q_proj.bias", (h,)),
                (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.k_proj.bias", (kv,)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.v_proj.bias", (kv,)),
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i)),
                (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
    out.append(("model.norm.weight", (h,)))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (v, h)))
    return out


def build_checkpoints(workdir, shapes, n_targets):
    """base, rl = base + 1e-3 noise, target_k = base + 1e-2 noise (bf16), each a loadable HF dir."""
    import torch

    from checkpoint_io import ShardedWriter

    cfg = SHAPES[shapes]
    config = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_act="silu",
                  max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  torch_dtype="bfloat16", use_cache=True, **cfg)
    tensors = qwen2_tensors(cfg)
    names = ["base", "rl"] + [f"target{k}" for k in range(n_targets)]
    dirs = {n: workdir / n for n in names}
    for d in dirs.values():
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(config, indent=2))
    entries = [(n, torch.bfloat16, s) for n, s in tensors]
    writers = {n: ShardedWriter(dirs[n], entries, 5 * 10**9) for n in names}
    gen = torch.Generator().manual_seed(0)
    for tensor_name, shape in tensors:
        base = torch.randn(shape, generator=gen) * 0.02
        noise = torch.randn(shape, generator=gen)  # shifted per model: cheaper than fresh noise each
        for k, n in enumerate(names):
            t = base if n == "base" else base + noise.roll(k) * (1e-3 if n == "rl" else 1e-2)
            writers[n].write(tensor_name, t.to(torch.bfloat16).reshape(-1).view(torch.uint8))
        if tensor_name.endswith("post_attention_layernorm.weight"):
            print(f"building synthetic {shapes} checkpoints: {tensor_name.split('.')[2]} layers done",
                  file=sys.stderr, flush=True)
    for w in writers.values():
        w.finish()
    return dirs


def drop_cache(paths):
    """Empty the page cache (all of it where we may, else our own files' clean pages), so the
    method starts cold; returns how."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    for root in paths:
        for f in Path(root).rglob("*"):
            if f.is_file():
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return "posix_fadvise DONTNEED on the benchmark's files"


def warm_cache(paths):
    """Read the inputs once, so they sit in the page cache (as right after training)."""
    subprocess.run(["cat"] + [str(f) for root in paths for f in sorted(Path(root).rglob("*")) if f.is_file()],
                   stdout=subprocess.DEVNULL, check=True)
    return "inputs read once before"


def dir_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ---- the methods, each run as `bench_inherit_weight.py --child METHOD ...` in its own process

def child_io_floor(rl, base, targets, outputs):
    subprocess.run(["cat"] + [str(f) for d in [rl, base] + targets for f in sorted(Path(d).glob("*.safetensors"))],
                   stdout=subprocess.DEVNULL, check=True)
    for target, out in zip(targets, outputs):
        Path(out).mkdir(parents=True)
        for f in sorted(Path(target).glob("*.safetensors")):
            shutil.copyfile(f, Path(out) / f.name)
            fd = os.open(Path(out) / f.name, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)


def child_original(rl, base, targets, outputs, dtype_name):
    """The original release's loop: full transformers loads, named_parameters, save_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    rl_model = AutoModelForCausalLM.from_pretrained(rl, dtype=dtype)
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    rl_params, base_params = dict(rl_model.named_parameters()), dict(base_model.named_parameters())
    for target, out in zip(targets, outputs):
        model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.add_(rl_params[name] - base_params[name])
        model.save_pretrained(out)


def child_operator(rl, base, targets, outputs):
    from inherit_weight import inherit

    inherit(targets, outputs, grpo_model=rl, base_model=base, quiet=True)


def run_child(method, dirs, workdir, n_targets, cache, baseline_repo=None):
    """Run one method in a child under /usr/bin/time -v, the inputs' page cache `cache` (cold/warm);
    returns (wall s, peak RSS bytes, bytes moved, output dirs, how the cache was set)."""
    targets = [str(dirs[f"target{k}"]) for k in range(n_targets)]
    outputs = [str(workdir / "out" / f"{method}_{k}") for k in range(n_targets)]
    shutil.rmtree(workdir / "out", ignore_errors=True)
    (workdir / "out").mkdir()
    inputs = [dirs["rl"], dirs["base"]] + targets
    cache_how = drop_cache(dirs.values()) if cache == "cold" else warm_cache(inputs)
    script, child = __file__, method
    if method.startswith("baseline"):  # the other checkout's own benchmark script runs its operator
        script, child = str(Path(baseline_repo) / "benchmarks" / "bench_inherit_weight.py"), method.replace(
            "baseline", "operator")
    cmd = ["/usr/bin/time", "-v", sys.executable, script, "--child", child, "--rl", str(dirs["rl"]),
           "--base", str(dirs["base"]), "--child_targets", *targets, "--child_outputs", *outputs]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) * 1024
    moved = sum(dir_bytes(d) for d in inputs) + sum(dir_bytes(o) for o in outputs)
    return wall, rss, moved, outputs, cache_how


def count_differing_tensors(out_dir, reference_dir):
    """How many tensors of out_dir differ from reference_dir (the exact result), bit for bit."""
    import torch

    from checkpoint_io import CheckpointReader

    a, b = CheckpointReader(out_dir), CheckpointReader(reference_dir)
    differ = 0
    for name in b.names():
        x, y = a.get(name).to(b.info(name).dtype), b.get(name)  # a float32 output is compared after the cast
        differ += not torch.equal(x.view(torch.uint8), y.view(torch.uint8))
    return differ, len(b.names())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="1.5b")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the median is reported")
    parser.add_argument("--cache", nargs="+", choices=["cold", "warm"], default=["cold", "warm"],
                        help="the inputs' page cache when a method starts (default: both, one table each)")
    parser.add_argument("--methods", nargs="+", choices=METHODS + BASELINE_METHODS, default=METHODS)
    parser.add_argument("--baseline_repo", help="another checkout whose operator the baseline_* methods run")
    parser.add_argument("--workdir", default=str(REPO_ROOT / "outputs" / "bench_inherit_weight"),
                        help="scratch dir for the synthetic checkpoints (removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rl", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--child_targets", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--child_outputs", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child.startswith("io_floor"):
            child_io_floor(args.rl, args.base, args.child_targets, args.child_outputs)
        elif args.child.startswith("original"):
            child_original(args.rl, args.base, args.child_targets, args.child_outputs, args.child.split("_")[1]
                           .replace("bf16", "bfloat16").replace("fp32", "float32"))
        else:
            child_operator(args.rl, args.base, args.child_targets, args.child_outputs)
        return
    if not Path("/usr/bin/time").exists():
        sys.exit("this benchmark needs /usr/bin/time (GNU time) for peak RSS: apt-get install time")

    if any(m in BASELINE_METHODS for m in args.methods) and not args.baseline_repo:
        sys.exit("baseline_* methods need --baseline_repo DIR (e.g. git worktree add /tmp/before main)")
    workdir = Path(args.workdir)
    if workdir.exists():
        sys.exit(f"{workdir} exists; remove it (a previous benchmark's leftovers) or pass another --workdir")
    n_targets = 4 if any(m.endswith("_4") for m in args.methods) else 1
    from checkpoint_io import numel

    per_model = sum(2 * numel(shape) for _, shape in qwen2_tensors(SHAPES[args.shapes]))
    free = shutil.disk_usage(workdir.parent if workdir.parent.exists() else REPO_ROOT).free
    need = per_model * (2 + n_targets) + per_model * (2 * n_targets if "original_fp32" in args.methods else n_targets)
    if need > free * 0.9:
        sys.exit(f"needs ~{need / 1e9:.0f} GB of disk for inputs and outputs, {free / 1e9:.0f} GB free; "
                 "use fewer --methods/targets or another --workdir")
    workdir.mkdir(parents=True)
    results = {(cache, m): [] for cache in args.cache for m in args.methods}
    cache_how = {}
    try:
        t0 = time.perf_counter()
        dirs = build_checkpoints(workdir, args.shapes, n_targets)
        print(f"synthetic {args.shapes} checkpoints ({per_model / 1e9:.2f} GB each, {2 + n_targets} models) "
              f"built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        exactness = {}
        for rep in range(args.repeats):
            for cache in args.cache:
                for method in args.methods:
                    if method == "original_fp32":
                        import psutil

                        if psutil.virtual_memory().available < 6 * per_model * 1.1:
                            print(f"skipping original_fp32: needs ~{6 * per_model / 1e9:.0f} GB of RAM "
                                  f"(3 models in float32), {psutil.virtual_memory().available / 1e9:.0f} GB available",
                                  file=sys.stderr)
                            continue
                    n = 4 if method.endswith("_4") else 1
                    wall, rss, moved, outputs, cache_how[cache] = run_child(method, dirs, workdir, n, cache,
                                                                            args.baseline_repo)
                    results[cache, method].append((wall, rss, moved))
                    print(f"rep {rep + 1}/{args.repeats} {cache} {method}: {wall:.1f} s, peak RSS {rss / 1e9:.2f} GB",
                          file=sys.stderr)
                    keep = workdir / f"keep_{method}"
                    if method in ("original_bf16", "original_fp32", "operator_1", "baseline_1") and not keep.exists():
                        # The exact reference for target0 is operator_1's output (checked bit-exact by the tests).
                        shutil.move(outputs[0], keep)
        if (workdir / "keep_operator_1").exists():
            for method in ("original_bf16", "original_fp32", "baseline_1"):
                if (workdir / f"keep_{method}").exists():
                    exactness[method] = count_differing_tensors(workdir / f"keep_{method}", workdir / "keep_operator_1")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    for cache in args.cache:
        print_table(args, cache, cache_how.get(cache, ""), {m: results[cache, m] for m in args.methods}, exactness,
                    per_model)


def median_wall(runs):
    return statistics.median(r[0] for r in runs)


def print_table(args, cache, cache_how, results, exactness, per_model):
    """One markdown table of the `cache` (cold/warm) runs, and the ratios between methods."""
    floor = {m: median_wall(results[f"io_floor_{m[-1]}"]) for m in args.methods if results.get(f"io_floor_{m[-1]}")}
    print(f"\n{args.shapes} shapes, bf16, {per_model / 1e9:.2f} GB per checkpoint, median of {args.repeats}, "
          f"{cache} cache ({cache_how}); shared machine: figures are noisy\n")
    print("| method | targets | wall (s) | min–max (s) | peak RSS (GB) | GB/s (read+write) | × I/O floor | exact |")
    print("|---|---|---|---|---|---|---|---|")
    for method in args.methods:
        runs = results[method]
        if not runs:
            print(f"| {method} | | skipped | | | | | |")
            continue
        walls = [r[0] for r in runs]
        wall, rss, moved = statistics.median(walls), max(r[1] for r in runs), runs[0][2]
        ratio = f"{wall / floor[method]:.2f}" if method in floor else ""
        exact = ("yes" if method.startswith("operator") else "–" if method.startswith("io") else
                 (f"{exactness[method][0]}/{exactness[method][1]} tensors differ" if method in exactness else "?"))
        if method == "original_fp32":
            exact += " (float32 output, 2× size)"
        print(f"| {method} | {4 if method.endswith('_4') else 1} | {wall:.1f} | {min(walls):.1f}–{max(walls):.1f} | "
              f"{rss / 1e9:.2f} | {moved / 1e9 / wall:.2f} | {ratio} | {exact} |")
    for method in BASELINE_METHODS:
        operator = method.replace("baseline", "operator")
        if results.get(method) and results.get(operator):
            r = median_wall(results[operator]) / median_wall(results[method])
            pairs = [o[0] / b[0] for o, b in zip(results[operator], results[method])]
            print(f"\n{cache}: {operator} / {method} (this checkout against {args.baseline_repo}): {r:.2f}× in "
                  f"medians; per repetition {', '.join(f'{p:.2f}' for p in pairs)}")
    for prefix in ("operator", "baseline"):
        if results.get(f"{prefix}_1") and results.get(f"{prefix}_4"):
            r = median_wall(results[f"{prefix}_4"]) / median_wall(results[f"{prefix}_1"])
            print(f"\n{cache}: {prefix}: 4 targets in one run take {r:.2f}× the time of 1 target")

if __name__ == "__main__":
    main()
