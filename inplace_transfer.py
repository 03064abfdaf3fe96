"""Skill transfer inside a loaded inference engine: its weights become
target + Σ_k alphas[k]·skill_vectors[k] without writing a model or restarting the engine.

The tensors are inherit_weight.inherited_tensors(target_model, skill_vectors, alphas): read from
the on-disk target and saved vector files, fp32 math, cast once to the target's dtype, one tensor
at a time -- exactly what `inherit_weight.py` writes for the same inputs, so an engine updated here
computes what a fresh engine loaded from that written model computes. Each update starts from the
on-disk target again: moving from one λ to another replaces the weights, it never accumulates.

    # vLLM (GPU build 0.24.0 or CPU build 0.27.1): offline engine with the worker extension
    llm = LLM(model=TARGET, **vllm_engine_options())
    apply_to_vllm(llm, TARGET, [VECTOR], [0.5])
    # transformers
    model = AutoModelForCausalLM.from_pretrained(TARGET)
    apply_to_hf(model, TARGET, [VECTOR], [0.5])

vLLM: the engine core runs in other processes, so the update is a method of a worker extension
class (`worker_extension_cls`) called by name through `LLM.collective_rpc`; it receives paths and
λ, never tensors, and every worker (each tensor-parallel rank) reads the files itself, as vLLM's
own loader does. After `model.load_weights` it re-runs vLLM's post-load processing
(`process_weights_after_loading`: every module's quant_method, then the attention layers), as
verl's weight sync does; the CPU build repacks Linear weights into its GEMM kernels there and
would otherwise keep computing with the old ones. Then the prefix cache is reset: every λ sends
the same prompts, and cached KV of the previous weights would answer them. Refused before any
weight changes: a tied target that the vectors would untie (inherited_tensors raises
TransferError), a quantized engine (its kernels hold requantized weights), an engine made without
the extension. An engine parameter the stream did not reach (an engine loaded from another model)
is an error after the update.

Imports nothing from evaluation: the LooGLE sweep (eval_loogle.sweep_alpha) and the SQuAD setting
both use it.
"""

import os
from pathlib import Path

from inherit_weight import TransferError, check_inherited, inherited_tensors

REPO_ROOT = Path(__file__).resolve().parent
VLLM_EXTENSION = "inplace_transfer.SkillTransferExtension"


def vllm_engine_options():
    """The `vllm.LLM` keywords an engine needs for apply_to_vllm. The engine's worker processes
    import this module by name, so the repo root goes on PYTHONPATH (they inherit the environment,
    not sys.path)."""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, paths)])
    return {"worker_extension_cls": VLLM_EXTENSION}


def plain_inputs(target_model, skill_vectors, alphas):
    """The inputs as plain values (what collective_rpc sends), one alpha per vector."""
    skill_vectors = [str(v) for v in skill_vectors]
    alphas = [float(a) for a in alphas]
    if len(alphas) != len(skill_vectors):
        raise TransferError(f"{len(alphas)} alphas for {len(skill_vectors)} skill vectors: give one per vector")
    return str(target_model), skill_vectors, alphas


def check_inputs(target_model, skill_vectors, alphas):
    """plain_inputs, checked by reading headers but no tensor, so that bad input fails here, in the
    caller's process, before any weight changes. Raises TransferError (a ValueError)."""
    args = plain_inputs(target_model, skill_vectors, alphas)
    check_inherited(*args)
    return args


class SkillTransferExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); its methods run in every worker
    process, called by name with `LLM.collective_rpc`. The names carry a `past_` prefix: vLLM
    refuses an extension attribute the worker already has."""

    def past_load_inherited_weights(self, target_model, skill_vectors, alphas):
        """Load target + Σ alphas[k]·skill_vectors[k] into this worker's model and re-run the
        post-load processing. Returns {tensors: how many were loaded, not_updated: engine
        parameters the stream did not reach}."""
        import torch
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.utils import process_weights_after_loading

        model_config = self.vllm_config.model_config
        if model_config.quantization:
            raise TransferError(f"the engine runs a {model_config.quantization}-quantized model; load the target unquantized")
        model = self.model_runner.model
        before = {name for name, _ in model.named_parameters()}
        count = 0

        def stream():
            nonlocal count
            # The math stays on the CPU, as in inherit_weight.py; load_weights copies each result in.
            for name, tensor in inherited_tensors(target_model, skill_vectors, alphas):
                count += 1
                yield name, tensor

        with set_current_vllm_config(self.vllm_config):
            loaded = model.load_weights(stream())
            # once, after every tensor: some post-load transforms are not idempotent per tensor
            process_weights_after_loading(model, model_config, self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        # load_weights returns the parameter names it filled (vLLM names: fused qkv_proj etc.)
        not_updated = sorted(before - set(loaded)) if loaded is not None else []
        return {"tensors": count, "not_updated": not_updated}


def apply_to_vllm(llm, target_model, skill_vectors, alphas):
    """Set the weights of a `vllm.LLM` made with vllm_engine_options() to
    target + Σ alphas[k]·skill_vectors[k]; returns the number of tensors loaded per worker."""
    config = llm.llm_engine.vllm_config
    if config.parallel_config.worker_extension_cls != VLLM_EXTENSION:
        raise RuntimeError("the engine was created without the skill-transfer worker extension: "
                           "LLM(..., **inplace_transfer.vllm_engine_options())")
    if config.model_config.quantization:
        raise TransferError(f"the engine runs a {config.model_config.quantization}-quantized model; load the target unquantized")
    args = check_inputs(target_model, skill_vectors, alphas)
    results = llm.collective_rpc("past_load_inherited_weights", args=args)
    for rank, result in enumerate(results):
        if result["not_updated"]:
            raise RuntimeError(f"worker {rank}: {target_model} did not update the engine parameters {result['not_updated'][:5]}"
                               f"{' ...' if len(result['not_updated']) > 5 else ''}; the engine was loaded from another model")
    if not llm.reset_prefix_cache():  # False while requests hold cached blocks
        raise RuntimeError("the engine could not reset its prefix cache (requests still running?): its cached KV "
                           "of the previous weights would answer the next prompts")
    return [r["tensors"] for r in results]


def apply_to_hf(model, target_model, skill_vectors, alphas):
    """Set the weights of a transformers model loaded from `target_model` to
    target + Σ alphas[k]·skill_vectors[k] (each tensor copied into its parameter, cast to the
    parameter's dtype as from_pretrained would). Returns the number of tensors loaded."""
    import torch

    by_name = model.state_dict(keep_vars=True)  # checkpoint names; a tied lm_head shares the embedding's tensor
    updated, count = set(), 0
    with torch.no_grad():
        # inherited_tensors runs every check when called, before the first tensor is copied
        for name, tensor in inherited_tensors(*plain_inputs(target_model, skill_vectors, alphas)):
            if name not in by_name:
                raise RuntimeError(f"{target_model} stores {name}, which the loaded model does not have; "
                                   "the model was loaded from another checkpoint")
            by_name[name].copy_(tensor)
            updated.add(id(by_name[name]))
            count += 1
    missing = sorted(name for name, p in model.named_parameters() if id(p) not in updated)
    if missing:
        raise RuntimeError(f"{target_model} did not update the model parameters {missing[:5]}; the model was loaded from another checkpoint")
    return count
