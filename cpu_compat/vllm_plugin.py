"""vLLM general plugin (entry point `vllm.general_plugins`): placeholder until the CPU layer lands."""


def register():
    """Called by vLLM in each of its processes; nothing to patch yet."""
