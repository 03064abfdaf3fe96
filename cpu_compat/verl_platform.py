"""verl platform "cpu": runs verl 0.9.1's trainers on a machine with no NVIDIA GPU.

verl has no CPU platform: detection falls back to "nvidia" and the process group asks for
`cpu:gloo,cuda:nccl` ("Distributed package doesn't have NCCL built in"). verl imports the
modules named in VERL_USE_EXTERNAL_MODULES at `import verl`, and VERL_PLATFORM picks a platform
registered with PlatformRegistry, so this module plugs in without editing verl:

    VERL_USE_EXTERNAL_MODULES=cpu_compat.verl_platform VERL_PLATFORM=cpu \
        torchrun ... -m verl.trainer.sft_trainer trainer.device=cpu engine.strategy=fsdp2 ...

scripts/common.sh sets both variables (and the CPU overrides) when no NVIDIA GPU is found.
"""

import os
import types
from contextlib import contextmanager

import psutil
import torch
import torch.distributed
from torch.distributed.fsdp import CPUOffloadPolicy
from verl.plugin.platform import PlatformBase, PlatformRegistry


def _make_device_module():
    """torch.cpu plus the torch.cuda-style helpers verl calls on `get_torch_device()`."""
    module = types.ModuleType("cpu_compat.cpu_device")
    for name in dir(torch.cpu):
        if not name.startswith("_"):
            setattr(module, name, getattr(torch.cpu, name))

    def mem_get_info(device=None):
        memory = psutil.virtual_memory()
        return memory.available, memory.total

    def rss(device=None):
        return psutil.Process().memory_info().rss

    def noop(*args, **kwargs):
        return None

    module.mem_get_info = mem_get_info
    module.memory_allocated = module.memory_reserved = rss
    module.max_memory_allocated = module.max_memory_reserved = rss
    module.empty_cache = module.ipc_collect = module.reset_peak_memory_stats = noop
    module.set_per_process_memory_fraction = noop
    module.get_rng_state = lambda device=None: torch.get_rng_state()
    module.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    module.manual_seed = module.manual_seed_all = lambda seed: torch.manual_seed(seed)
    module.get_device_name = lambda device=None: "cpu"
    return module


CPU_DEVICE_MODULE = _make_device_module()


def _init_process_group_without_duplicate_cpu(init_process_group):
    """verl asks for f"cpu:gloo,{device}:{backend}", i.e. "cpu:gloo,cpu:gloo" here, which torch
    rejects ("Duplicate device type cpu"). Drop the repeated entry; everything else passes through."""

    def wrapper(backend=None, *args, **kwargs):
        if isinstance(backend, str) and "," in backend:
            backend = ",".join(dict.fromkeys(backend.split(",")))
        return init_process_group(backend, *args, **kwargs)

    wrapper.past_cpu_compat = True
    return wrapper


def _never_pin(policy_init):
    """verl's FSDP2 engine builds the reference model with CPUOffloadPolicy(pin_memory=True);
    pinning needs an accelerator ("Cannot access accelerator device when none is available")."""

    def wrapper(self, pin_memory=True, *args, **kwargs):
        policy_init(self, False, *args, **kwargs)

    wrapper.past_cpu_compat = True
    return wrapper


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    @property
    def device_name(self):
        return "cpu"

    @property
    def vendor_name(self):
        return "cpu"

    @property
    def device_module(self):
        return CPU_DEVICE_MODULE

    def is_available(self):
        return True

    def current_device(self):
        # An int 0 would mean "accelerator 0" to torch >= 2.13 (verl/utils/fsdp_utils.py `.to(get_device_id())`).
        return torch.device("cpu")

    def device_count(self):
        return 1

    def set_device(self, device_index):
        return None

    def synchronize(self, device_index=None):
        return None

    def manual_seed(self, seed):
        torch.manual_seed(seed)

    def manual_seed_all(self, seed):
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings):
        return None

    def empty_cache(self):
        return None

    def get_device_capability(self, device_index=0):
        return None, None

    def communication_backend_name(self):
        return "gloo"

    def visible_devices_envvar(self):
        # Ray hands each worker its declared "GPU" through this variable; verl reads it back.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg):
        yield

    def profiler_start(self):
        return None

    def profiler_stop(self):
        return None

    def ray_resource_name(self):
        # GRPO on CPU declares one fake GPU to Ray (+ray_kwargs.ray_init.num_gpus=1) so that verl's
        # resource pools, which are built from accelerator counts, can schedule their workers.
        return "GPU"

    def ray_noset_envvars(self):
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self):
        return False

    def cudart(self):
        return None


if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
    # verl's FSDP engines register for devices "cuda"/"npu" only, yet run unchanged on CPU
    # tensors; verl's own VERL_ENGINE_DEVICE hook selects them.
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    if not hasattr(torch.distributed.init_process_group, "past_cpu_compat"):
        torch.distributed.init_process_group = _init_process_group_without_duplicate_cpu(
            torch.distributed.init_process_group
        )
    if not hasattr(CPUOffloadPolicy.__init__, "past_cpu_compat"):
        CPUOffloadPolicy.__init__ = _never_pin(CPUOffloadPolicy.__init__)
