"""CPU compatibility layer: what verl 0.9.1 and vLLM's CPU build need to run on a machine with
no NVIDIA GPU, without editing or vendoring either. Used only where no NVIDIA GPU is visible
(or PAST_DEVICE=cpu). Facts and error messages: shared/notes/verl-0.9.1.md.
"""
