"""vLLM general plugin (entry point `vllm.general_plugins`, declared in pyproject.toml): keep the
Linear weights of vLLM's CPU build reloadable, so that verl can sync actor weights into it.

verl updates the rollout engine in place (`model.load_weights`, then it re-runs
`process_weights_after_loading`). On CPU, vLLM's `UnquantizedLinearMethod.process_weights_after_loading`
calls `dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`, which swaps `layer.weight` for an
empty Parameter without a `weight_loader`: the next sync fails with AttributeError and the rollout
hangs. Keeping the weight (`remove_weight=False`, as vLLM already does for embeddings) costs one
extra copy of the Linear weights and makes every sync rebuild the packed kernel from the new weights.

vLLM calls `register()` in its server, engine-core and worker processes; on any other platform
(a GPU node) it does nothing.
"""


def register():
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.model_executor.layers import linear, utils

    if getattr(linear.UnquantizedLinearMethod.process_weights_after_loading, "past_cpu_compat", False):
        return

    def process_weights_after_loading(self, layer):
        utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=False)

    process_weights_after_loading.past_cpu_compat = True
    linear.UnquantizedLinearMethod.process_weights_after_loading = process_weights_after_loading
