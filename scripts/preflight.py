"""What the bash drivers check before they start anything heavy: `python scripts/preflight.py CHECK ...`.

  sft    rows of an SFT parquet -> the batch and micro batch verl 0.9.1 can train on them with
  grpo   prompts verl's RLHFDataset keeps (after filter_overlong_prompts, with the model's
         tokenizer and chat template, composed from the driver's own overrides) -> batch, mini
         batch and micro batch; the validation set must keep at least one prompt
  eval   questions in an evaluation parquet (none: stop before loading a model)
  judge  the judge at a URL: it answers, runs the backend asked for, and takes the token
  disk   what a pipeline run will write (from the model's parameter count), against free space
  gpu    GPU memory per GPU of a GRPO run (the composed verl config), against the GPUs' memory
  nodes  a Ray cluster for NNODES > 1: its nodes, their GPUs, and the run's dirs shared by all
  pip    what `pip install` of the project would change in the torch a GPU node already has

Results go to stdout (one line of numbers, then an optional line saying what was changed and
why); a check that fails prints one line naming the file, the stage and what to change, and
exits 3. Only the standard library is imported at the top: each check imports what it needs.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

GB = 1e9
GIB = 2**30


class Refused(Exception):
    """The input cannot be used as asked; the message says why and what to change."""


# --- data sizes -------------------------------------------------------------------------------


def parquet_rows(path):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def manifest_note(path):
    """What the data stage recorded about `path` (the manifest beside it whose output it is)."""
    path = Path(path)
    for manifest in sorted(path.parent.glob("manifest_*.json")):
        try:
            doc = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if doc.get("output") == path.name:
            skipped = doc.get("skipped") or {}
            skips = ", ".join(f"{k} {v}" for k, v in skipped.items()) or "none"
            return f"{manifest.name}: rows {doc.get('rows')}, counts {doc.get('counts')}, skipped: {skips}"
    return "no manifest beside it"


def fit_sft(rows, batch, micro, ranks):
    """verl's SFT trainer: a DistributedSampler with drop_last gives each of `ranks` data-parallel
    ranks rows // ranks rows, batched by batch // ranks with drop_last. Returns (batch, micro)
    with at least one step per epoch, as close to the request as the rows allow."""
    per_rank = min(batch // ranks, rows // ranks)
    if per_rank < 1:
        return None
    micro = min(micro, per_rank)
    while per_rank % micro:  # without dynamic batching verl splits a rank's batch into equal micro batches
        micro -= 1
    return per_rank * ranks, micro


def fit_grpo(prompts, batch, mini, micro, rollout_n, ranks):
    """verl's PPO trainer: drop_last batches of `batch` prompts, each with rollout_n responses;
    the actor updates on mini batches of mini * rollout_n sequences split over `ranks`, in micro
    batches per rank. Returns (batch, mini, micro) or None when no batch fits the prompts."""
    batch = min(batch, prompts)
    while batch > 0 and (batch * rollout_n) % ranks:
        batch -= 1
    if batch < 1:
        return None

    def valid_mini(m):
        return batch % m == 0 and (m * rollout_n) % ranks == 0

    mini = next((m for m in range(min(mini, batch), 0, -1) if valid_mini(m)), None) or next(
        m for m in range(min(mini, batch), batch + 1) if valid_mini(m))
    per_rank = mini * rollout_n // ranks
    micro = min(micro, per_rank)
    while per_rank % micro:
        micro -= 1
    return batch, mini, micro


def fit_sft_check(args):
    rows = parquet_rows(args.data)
    if rows < max(args.ranks, 1):
        what = "has no rows" if rows == 0 else f"has {rows} row(s), fewer than its {args.ranks} data-parallel ranks"
        raise Refused(
            f"{args.stage}: {args.data} {what} ({manifest_note(args.data)}). "
            + ("Regenerate it with more data (MAX_CHUNKS=0, more QUESTIONS_PER_CHUNK, another PROPOSER or GENERATOR)"
               if rows == 0 else "Train on fewer GPUs (N_GPUS_PER_NODE, NNODES) or generate more rows")
            + " before training.")
    batch, micro = fit_sft(rows, args.batch, args.micro, args.ranks)
    print(batch, micro)
    if (batch, micro) != (args.batch, args.micro):
        print(f"{args.stage}: {rows} rows for SFT_BATCH_SIZE {args.batch} on {args.ranks} rank(s): training with batch"
              f" {batch}, micro batch {micro} (verl drops an epoch's last partial batch)")


def rl_dataset_sizes(overrides):
    """Prompts verl 0.9.1 keeps from data.train_files and data.val_files, built the way its PPO
    trainer builds them: the composed config, the model's tokenizer/processor (HFModelConfig),
    create_rl_dataset (RLHFDataset with filter_overlong_prompts)."""
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass

    config = compose_ppo_config(overrides)
    model = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    sizes = {}
    for split, files, max_samples in (("train", config.data.train_files, "train_max_samples"),
                                      ("val", config.data.val_files, "val_max_samples")):
        dataset = create_rl_dataset(files, config.data, model.tokenizer, model.processor, is_train=split == "train",
                                    max_samples=config.data.get(max_samples, -1))
        sizes[split] = len(dataset)
    return sizes, config


def fit_grpo_check(args):
    with contextlib.redirect_stdout(sys.stderr):  # verl prints dataset sizes; stdout is the answer
        sizes, config = rl_dataset_sizes(args.overrides)
    for split, key in (("train", "train_files"), ("val", "val_files")):
        if sizes[split] == 0:
            files = config.data[key]
            files = [files] if isinstance(files, str) else list(files)
            rows = sum(parquet_rows(f) for f in files)
            where = f"{', '.join(files)} ({manifest_note(files[0])})"
            if rows:
                raise Refused(f"{args.stage}: all {rows} prompt(s) of {where} are longer than MAX_PROMPT_LENGTH"
                              f" {config.data.max_prompt_length} tokens with the model's chat template, so verl"
                              " would drop them all; raise MAX_PROMPT_LENGTH before training.")
            raise Refused(f"{args.stage}: {where} has no rows; regenerate it (scripts/gen_data/) before training.")
    fitted = fit_grpo(sizes["train"], args.batch, args.mini, args.micro, args.rollout_n, args.ranks)
    if fitted is None:
        smallest = args.ranks // math.gcd(args.ranks, args.rollout_n)
        raise Refused(
            f"{args.stage}: {config.data.train_files} keeps {sizes['train']} prompt(s), fewer than the {smallest} a step"
            f" needs on {args.ranks} rank(s) with ROLLOUT_N {args.rollout_n} ({manifest_note(config.data.train_files)})."
            " Train on fewer GPUs (N_GPUS_PER_NODE, NNODES) or generate more prompts.")
    print(*fitted)
    if fitted != (args.batch, args.mini, args.micro):
        print(f"{args.stage}: {sizes['train']} prompts kept for GRPO_BATCH_SIZE {args.batch} (mini {args.mini}, micro"
              f" {args.micro}) on {args.ranks} rank(s), ROLLOUT_N {args.rollout_n}: training with batch {fitted[0]},"
              f" mini batch {fitted[1]}, micro batch {fitted[2]}")


def eval_check(args):
    rows = parquet_rows(args.data)
    if rows == 0:
        raise Refused(f"{args.stage}: {args.data} has no questions ({manifest_note(args.data)}); rebuild it with"
                      " scripts/gen_data/process_loogle_eval.sh from a LooGLE file that has QA for this passage.")
    print(rows)


# --- the judge ------------------------------------------------------------------------------------

HOW_TO_CONFIGURE_A_JUDGE = (
    "Configure an LLM judge: JUDGE_BACKEND=openai (key in OPENAI_API_KEY or openai_api_key.txt), or"
    " JUDGE_BACKEND=vllm JUDGE_MODEL=<model> with JUDGE_BASE_URL=<OpenAI-compatible URL> or JUDGE_GPUS=<GPUs for a"
    " local vllm serve> (scripts/train/start_judge_server.sh). JUDGE_BACKEND=lexical chooses the word-overlap judge"
    " by name (tests, the CPU demo): GRPO then optimises token F1, not correctness; JUDGE_BACKEND=exact_match the"
    " exact-match grader, for one-word answers only (the synthetic world).")


def judge_check(args):
    import urllib.error
    import urllib.request

    def get(path, token=None):
        request = urllib.request.Request(args.url + path, headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read() or b"{}")

    try:
        health = get("/health")
    except (OSError, ValueError) as e:
        raise Refused(f"{args.stage}: no judge answers at {args.url} ({e.__class__.__name__}). Start one first"
                      f" (bash scripts/train/start_judge_server.sh) or point JUDGE_URL at one. {HOW_TO_CONFIGURE_A_JUDGE}")
    backend = health.get("backend")
    if args.backend and backend != args.backend:
        raise Refused(f"{args.stage}: the judge at {args.url} runs the {backend} backend, not JUDGE_BACKEND={args.backend};"
                      " stop it or use another JUDGE_PORT.")
    offline = {"lexical": "lexical word-overlap judge", "exact_match": "exact_match judge"}
    if backend in offline and args.backend != backend:
        raise Refused(f"{args.stage}: the judge at {args.url} is the {offline[backend]}, which no one chose."
                      f" {HOW_TO_CONFIGURE_A_JUDGE}")
    from judge import JudgeError, read_auth_token

    try:  # as the reward workers read it: the file, else env JUDGE_TOKEN_FILE / JUDGE_AUTH_TOKEN
        token = read_auth_token(args.token_file)
    except JudgeError as e:
        raise Refused(f"{args.stage}: {e}. The judge at {args.url} needs its token: start it with"
                      " scripts/train/start_judge_server.sh (it writes one) or set JUDGE_TOKEN_FILE to its token file.")
    try:
        get("/metrics", token)
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise Refused(f"{args.stage}: the judge at {args.url} refuses " + (
                f"the token in {args.token_file}" if token else "requests without a token: set JUDGE_TOKEN_FILE"))
        raise Refused(f"{args.stage}: the judge at {args.url} answered {e.code} to GET /metrics")
    print(" ".join(filter(None, [backend, health.get("judge_model")])))


# --- disk --------------------------------------------------------------------------------------


# The drivers' default hub models (their hub metadata), for machines that cannot reach the hub.
KNOWN_PARAMETER_COUNTS = {"Qwen/Qwen2.5-7B-Instruct": 7_615_616_512, "Qwen/Qwen2.5-7B": 7_615_616_512}


def parameters_from_config(config):
    """Parameters of a Llama/Qwen2-style decoder from its config.json: embeddings (and an untied
    lm_head), per layer q/k/v/o projections (q/k/v biases for Qwen2 or attention_bias), the
    gate/up/down MLP and two norms, and the final norm. None for other architectures."""
    config = config.get("text_config") or config
    if config.get("model_type") not in ("llama", "qwen2", "mistral") or config.get("num_experts"):
        return None
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2 + (heads * head_dim + 2 * kv * head_dim if bias else 0)
    layer = attention + 3 * h * inter + 2 * h
    return vocab * h * (1 if config.get("tie_word_embeddings") else 2) + config["num_hidden_layers"] * layer + h


def parameter_count(model):
    """Parameters of a local HF model dir (its safetensors headers, else its config.json), or of a
    hub id (the drivers' defaults known here, the hub's metadata, else a cached index or config);
    None when nothing tells."""
    path = Path(model)
    if path.is_dir():
        total = 0
        for shard in sorted(path.glob("*.safetensors")):
            with open(shard, "rb") as f:
                header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
        if not total and (path / "config.json").is_file():
            total = parameters_from_config(json.loads((path / "config.json").read_text()))
        return total or None
    if model in KNOWN_PARAMETER_COUNTS:
        return KNOWN_PARAMETER_COUNTS[model]
    with contextlib.suppress(Exception):
        from huggingface_hub import HfApi

        return HfApi().model_info(model, files_metadata=False).safetensors.total
    with contextlib.suppress(Exception):
        from huggingface_hub import try_to_load_from_cache

        config = json.loads(Path(try_to_load_from_cache(model, "config.json")).read_text())
        with contextlib.suppress(Exception):
            index = json.loads(Path(try_to_load_from_cache(model, "model.safetensors.index.json")).read_text())
            bytes_per = {"float32": 4, "bfloat16": 2, "float16": 2}[config.get("torch_dtype") or config.get("dtype")]
            return index["metadata"]["total_size"] // bytes_per
        return parameters_from_config(config)
    return None


def free_bytes(path):
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free, path


def disk_estimate(params, sft_stages, grpo_runs, inherited, ckpt_to_keep, export_dtype, keep_resumable):
    """Bytes a pipeline run writes, by part: (label, kept bytes, extra bytes while training)."""
    export = params * (4 if export_dtype == "fp32" else 2)   # one HF model
    resumable = params * (4 + 8)                             # FSDP fp32 master shards + Adam's two fp32 moments
    checkpoint = resumable + export
    parts = []
    if sft_stages:
        kept = sft_stages * (checkpoint if keep_resumable else export)
        parts.append((f"SFT: {sft_stages} stage(s), each keeps its final HF model", kept, 0 if keep_resumable else resumable))
    if grpo_runs:
        # per run: the final model and its skill vector (fp32); rounds >= 2 also keep their start model
        kept = grpo_runs * (export + 4 * params) + max(grpo_runs - 1, 0) * export
        kept += grpo_runs * (ckpt_to_keep * resumable if keep_resumable else 0)
        parts.append((f"GRPO: {grpo_runs} run(s)/round(s): final model, skill vector, round start models", kept,
                      (ckpt_to_keep + 1) * checkpoint))
    if inherited:
        parts.append((f"inherited targets: {inherited}", inherited * export, 0))
    return parts


def disk_check(args):
    params = parameter_count(args.model)
    if params is None:
        print(f"disk estimate: no parameter count for {args.model} (neither a local HF dir nor known to the hub);"
              " not checked")
        return
    parts = disk_estimate(params, args.sft_stages, args.grpo_runs, args.inherited, args.grpo_ckpt_to_keep,
                          args.export_dtype, args.keep_resumable)
    kept = sum(p[1] for p in parts)
    peak = kept + max((p[2] for p in parts), default=0)
    free, where = free_bytes(args.path)
    size = lambda n: f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 1e6:.1f} MB"  # noqa: E731
    count = f"{params / 1e9:.2f}B" if params >= 1e8 else f"{params / 1e6:.2f}M"
    print(f"disk estimate ({count} parameters; HF exports {args.export_dtype}: {size(params * (4 if args.export_dtype == 'fp32' else 2))}"
          f" each; FSDP shards + Adam state {size(params * 12)} per checkpoint):")
    for label, part_kept, part_peak in parts:
        print(f"  {label:<72} {size(part_kept):>12}" + (f"   (+{size(part_peak)} while training)" if part_peak else ""))
    for label, value in (("kept after the run", kept), ("peak while training", peak), (f"free on {where}", free)):
        print(f"  {label:<72} {size(value):>12}")
    if peak > free and not args.no_refuse:
        raise Refused(f"disk: the run needs about {peak / GB:.1f} GB at its peak but {where} has {free / GB:.1f} GB free."
                      " Free space, put CKPT_ROOT elsewhere, use HF_EXPORT_DTYPE=bf16, or DISK_CHECK=0 to start anyway.")


# --- GPU memory --------------------------------------------------------------------------------

DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}


def gpu_memory_estimate(params, ranks, model_dtype, ref_dtype, lora, param_offload, optimizer_offload, ref,
                        ref_offload, rollout_fraction, gpu_bytes):
    """Bytes per GPU of a verl FSDP GRPO run before activations, by part: [(label, bytes)].

    FSDP shards each model over all `ranks` GPUs (NNODES x N_GPUS_PER_NODE). With P parameters and
    b bytes per parameter in the actor's fsdp_config.model_dtype (fp32: 4, bf16: 2):
      actor    (P*b weights + P*b gradients + 2*P*b Adam moments) / ranks; param_offload drops the
               weights and gradients, optimizer_offload the moments; a LoRA actor keeps only its
               frozen weights P*b / ranks (the adapter is negligible)
      ref      P*b_ref / ranks for the KL reference (none with LoRA: verl's reference is then the
               actor without its adapter; none with the ref's param_offload)
      rollout  the colocated vLLM reserves rollout.gpu_memory_utilization x the GPU's memory
               (its weights and KV cache) while the actor's state stays on the GPU
    Activations come on top, so a total above the GPU's memory cannot run."""
    b = DTYPE_BYTES[model_dtype]
    if lora:
        actor = 0 if param_offload else params * b
    else:
        actor = (0 if param_offload else 2 * params * b) + (0 if optimizer_offload else 2 * params * b)
    parts = [(f"actor ({model_dtype}{', LoRA' if lora else ''}{', params offloaded' if param_offload else ''}"
              f"{', optimizer offloaded' if optimizer_offload and not lora else ''})", actor / ranks)]
    if ref and not lora and not ref_offload:
        parts.append((f"reference model ({ref_dtype})", params * DTYPE_BYTES[ref_dtype] / ranks))
    parts.append((f"vLLM rollout (gpu_memory_utilization {rollout_fraction})", rollout_fraction * gpu_bytes))
    return parts


def compose_ppo_config(overrides):
    """verl's PPO trainer config as `python -m verl.trainer.main_ppo --cfg job OVERRIDES` composes it."""
    from hydra import compose, initialize_config_module

    import verl  # noqa: F401  (imports VERL_USE_EXTERNAL_MODULES, e.g. the CPU platform)

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def gpu_check(args):
    config = compose_ppo_config(args.overrides)
    arr = config.actor_rollout_ref
    model = arr.model.path if Path(arr.model.path, "config.json").is_file() else args.model
    params = parameter_count(model)
    if params is None:
        print(f"GPU memory estimate: no parameter count for {model} (neither a local HF dir nor known); not checked")
        return
    ranks = config.trainer.nnodes * config.trainer.n_gpus_per_node
    gpu_bytes = args.gpu_memory_mib * 2**20 if args.gpu_memory_mib else None
    use_ref = bool(arr.actor.use_kl_loss or config.algorithm.use_kl_in_reward)
    fraction = arr.rollout.gpu_memory_utilization
    parts = gpu_memory_estimate(params, ranks, arr.actor.fsdp_config.model_dtype, arr.ref.fsdp_config.model_dtype,
                                arr.model.lora_rank > 0, arr.actor.fsdp_config.param_offload,
                                arr.actor.fsdp_config.optimizer_offload, use_ref, arr.ref.fsdp_config.param_offload,
                                fraction, gpu_bytes or 0)
    total = sum(p[1] for p in parts)
    described = ", ".join(f"{label} {value / GIB:.1f}" for label, value in parts if value)
    head = f"GPU memory estimate per GPU ({params / 1e9:.2f}B parameters, FSDP over {ranks} GPU(s))"
    if gpu_bytes is None:
        print(f"{head}: {described} GiB, plus the vLLM rollout's share; not checked (nvidia-smi does not tell the"
              " GPUs' memory)")
        return
    print(f"{head}: {total / GIB:.1f} GiB before activations ({described} GiB) of {gpu_bytes / GIB:.1f} GiB")
    if total > gpu_bytes:
        states = total - fraction * gpu_bytes
        needed = math.ceil(states * ranks / ((1 - fraction) * gpu_bytes)) if fraction < 1 else None
        raise Refused(
            f"{args.stage}: about {total / GIB:.0f} GiB per GPU before activations, more than a GPU's"
            f" {gpu_bytes / GIB:.0f} GiB. Use more GPUs (N_GPUS_PER_NODE, NNODES"
            + (f": at least {needed} in all" if needed else "") + "), or LoRA (actor_rollout_ref.model.lora_rank=32),"
            " or offload (actor_rollout_ref.actor.fsdp_config.param_offload=True"
            " actor_rollout_ref.actor.fsdp_config.optimizer_offload=True), or a lower ROLLOUT_GPU_MEMORY_UTILIZATION.")


# --- nodes (NNODES > 1) -------------------------------------------------------------------------

SHARED_MARK = ".past_shared_check"


def write_marks(dirs, token):
    """Before asking the nodes: a mark file holding `token` in each dir."""
    for d in dirs:
        Path(d).mkdir(parents=True, exist_ok=True)
        Path(d, f"{SHARED_MARK}.{token}").write_text(token)


def answer_marks(dirs, token, node):
    """On a node: which dirs show this run's mark (the same file, so the same filesystem); for those,
    an answer file named after the node, which the head then must see too. {dir: seen}."""
    seen = {}
    for d in dirs:
        mark = Path(d, f"{SHARED_MARK}.{token}")
        seen[d] = mark.is_file() and mark.read_text() == token
        if seen[d]:
            Path(d, f"{SHARED_MARK}.{token}.{node}").write_text(token)
    return seen


def unshared_dirs(dirs, token, answers):
    """On the head, after every node answered ({node: {dir: seen}}): one line per node and dir that
    are not one shared filesystem; the mark files are removed."""
    problems = []
    for node, seen in answers.items():
        for d in dirs:
            if not seen.get(d):
                problems.append(f"node {node} does not see {d} (no {SHARED_MARK} mark written there from this node)")
            elif not Path(d, f"{SHARED_MARK}.{token}.{node}").is_file():
                problems.append(f"node {node} wrote to its own {d}, which this node does not see")
    for d in dirs:
        for mark in Path(d).glob(f"{SHARED_MARK}.{token}*"):
            mark.unlink()
    return problems


def nodes_check(args):
    import secrets
    import socket

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        ray.init(address=args.address, logging_level="ERROR", log_to_driver=False)
    except ConnectionError as e:
        # Ray 2.60 starts a head with token authentication once ~/.ray/auth_token exists,
        # and a client without the token is refused with only this ConnectionError.
        auth = "token" if os.environ.get("RAY_AUTH_MODE") == "token" else "not set to token"
        raise Refused(f"{args.stage}: cannot join the Ray cluster at {args.address} ({e}). Check that its head runs"
                      f" there; if the cluster uses token authentication (its ray start log says so), this shell needs"
                      f" RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=<the token file it was started with>, as every"
                      f" node does (RAY_AUTH_MODE is {auth} here).") from None
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        here = ray.get_runtime_context().get_node_id()
        if len(nodes) < args.nnodes:
            raise Refused(f"{args.stage}: the Ray cluster at {args.address} has {len(nodes)} node(s), not NNODES={args.nnodes}:"
                          " start Ray on the others first (ray start --address=<head>:6379).")
        for n in nodes:
            gpus = int(n["Resources"].get("GPU", 0))
            name = n["NodeManagerAddress"]
            if gpus < args.gpus_per_node:
                raise Refused(f"{args.stage}: Ray node {name} offers {gpus} GPU(s), fewer than N_GPUS_PER_NODE={args.gpus_per_node};"
                              " set N_GPUS_PER_NODE to what every node offers, or restart Ray there with its GPUs.")
            if n["NodeID"] == here and args.judge_gpus and gpus > args.gpus_per_node:
                raise Refused(
                    f"{args.stage}: Ray on this node ({name}) offers {gpus} GPUs, so verl may place workers on the judge's"
                    f" GPU(s) JUDGE_GPUS={args.judge_gpus}. Restart it without them: ray stop; CUDA_VISIBLE_DEVICES="
                    f"{args.training_gpu_ids} ray start --head --num-gpus={args.gpus_per_node}")
        token = secrets.token_hex(8)
        write_marks(args.dirs, token)
        answer = ray.remote(num_cpus=0)(answer_marks)
        replies = {n["NodeManagerAddress"]: answer.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                args.dirs, token, n["NodeManagerAddress"]) for n in nodes}
        problems = unshared_dirs(args.dirs, token, {node: ray.get(ref, timeout=120) for node, ref in replies.items()})
        if problems:
            raise Refused(f"{args.stage}: the run's dirs must be one filesystem every node sees (checkpoints written on one"
                          f" node are read on the others): {'; '.join(problems)}. Put DATA_ROOT and CKPT_ROOT on a shared"
                          " filesystem (NFS, Lustre, ...).")
        print(f"{len(nodes)} Ray node(s), {args.gpus_per_node} GPU(s) each for training; {', '.join(args.dirs)} shared"
              f" by all (checked from {socket.gethostname()})")
    finally:
        ray.shutdown()


# --- pip (setup.sh on a GPU node) ---------------------------------------------------------------------


def pip_check(args):
    """Read `pip install --dry-run --report` and say which installed packages it would replace;
    refuse (exit 3) when torch is one of them."""
    import importlib.metadata

    report = json.loads(Path(args.report).read_text())
    changes = []
    for item in report.get("install", []):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed != version:
            changes.append((name, installed, version))
    for name, old, new in changes:
        print(f"pip would replace {name} {old} with {new}")
    torch = [c for c in changes if c[0].lower() == "torch"]
    if torch:
        _, old, new = torch[0]
        raise Refused(f"installing the project would replace this node's torch {old} with torch {new} (vllm 0.24.0, the"
                      f" version verl 0.9.1 supports, pins torch=={new}).")
    print(f"pip would install {len(report.get('install', []))} package(s); torch stays as it is")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="check", required=True)

    p = sub.add_parser("sft", help="fit SFT batch sizes to a parquet's rows")
    p.add_argument("--data", required=True)
    p.add_argument("--stage", required=True, help="what the rows are for, for messages")
    p.add_argument("--batch", type=int, required=True, help="global batch (rows per step)")
    p.add_argument("--micro", type=int, required=True, help="micro batch per rank")
    p.add_argument("--ranks", type=int, required=True, help="data-parallel ranks (NNODES x N_GPUS_PER_NODE)")
    p.set_defaults(run=fit_sft_check)

    p = sub.add_parser("grpo", help="fit GRPO batch sizes to the prompts verl keeps")
    p.add_argument("--stage", required=True)
    p.add_argument("--batch", type=int, required=True, help="prompts per step")
    p.add_argument("--mini", type=int, required=True, help="prompts per actor update")
    p.add_argument("--micro", type=int, required=True, help="sequences per rank per forward")
    p.add_argument("--rollout_n", type=int, required=True)
    p.add_argument("--ranks", type=int, required=True)
    p.add_argument("overrides", nargs="*", help="the Hydra overrides the driver passes to verl.trainer.main_ppo")
    p.set_defaults(run=fit_grpo_check)

    p = sub.add_parser("eval", help="count an evaluation parquet's questions")
    p.add_argument("--data", required=True)
    p.add_argument("--stage", required=True)
    p.set_defaults(run=eval_check)

    p = sub.add_parser("judge", help="check the judge the reward workers will call")
    p.add_argument("--url", required=True)
    p.add_argument("--stage", required=True)
    p.add_argument("--backend", choices=["openai", "vllm", "lexical", "exact_match"], help="the backend asked for (JUDGE_BACKEND)")
    p.add_argument("--token_file", help="file holding the judge's bearer token (JUDGE_TOKEN_FILE)")
    p.set_defaults(run=judge_check)

    p = sub.add_parser("disk", help="estimate the disk a pipeline run writes, against free space")
    p.add_argument("--model", required=True, help="the base model (local HF dir or hub id)")
    p.add_argument("--path", required=True, help="where the checkpoints go (CKPT_ROOT)")
    p.add_argument("--sft_stages", type=int, default=0, help="SFT stages still to run")
    p.add_argument("--grpo_runs", type=int, default=0, help="GRPO runs (or rounds) still to run")
    p.add_argument("--inherited", type=int, default=0, help="inherited targets still to write")
    p.add_argument("--grpo_ckpt_to_keep", type=int, default=1)
    p.add_argument("--export_dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--keep_resumable", action="store_true", help="FSDP shards and optimizer state are kept")
    p.add_argument("--no_refuse", action="store_true", help="print the estimate only")
    p.set_defaults(run=disk_check)

    p = sub.add_parser("gpu", help="estimate a GRPO run's GPU memory per GPU, against the GPUs' memory")
    p.add_argument("--stage", required=True)
    p.add_argument("--model", required=True, help="the model whose size counts when the config's model path does not"
                   " exist yet (the base model the start model is trained from)")
    p.add_argument("--gpu_memory_mib", type=int, help="the smallest GPU's memory (nvidia-smi); unset: not checked")
    p.add_argument("overrides", nargs="*", help="the Hydra overrides the driver passes to verl.trainer.main_ppo")
    p.set_defaults(run=gpu_check)

    p = sub.add_parser("nodes", help="check a Ray cluster's nodes and that the run's dirs are shared by all")
    p.add_argument("--stage", required=True)
    p.add_argument("--address", required=True, help="the Ray cluster (RAY_ADDRESS)")
    p.add_argument("--nnodes", type=int, required=True)
    p.add_argument("--gpus_per_node", type=int, required=True, help="N_GPUS_PER_NODE")
    p.add_argument("--judge_gpus", default="", help="JUDGE_GPUS: this node's GPUs kept for the judge")
    p.add_argument("--training_gpu_ids", default="", help="this node's GPUs for training (for the ray start hint)")
    p.add_argument("--dirs", nargs="+", required=True, help="what every node must see (DATA_ROOT, CKPT_ROOT, ...)")
    p.set_defaults(run=nodes_check)

    p = sub.add_parser("pip", help="what a pip install would change (its --dry-run --report)")
    p.add_argument("--report", required=True)
    p.set_defaults(run=pip_check)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except Refused as e:
        print(e, file=sys.stderr)
        return 3
    except FileNotFoundError as e:
        print(f"{getattr(args, 'stage', args.check)}: {e.filename or e} does not exist", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
