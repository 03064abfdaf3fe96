"""How much of the skill vector the served model keeps, and a float32 base to serve it without loss
(seal_squad/precision.py).

    python SEAL/general-knowledge/skill_precision.py measure --base_model /models/Qwen2.5-7B \
        --served_model checkpoints/seal_served/skill_alpha1.0 --skill_vector skill.safetensors --alpha 1.0
    python SEAL/general-knowledge/skill_precision.py float32_copy --model /models/Qwen2.5-7B --output /models/Qwen2.5-7B_float32

`measure` prints the share of the vector's non-zero elements (lambda * v != 0) whose served weight
differs from the base weight in the served dtype, warns below 50%, and keeps the numbers in
SERVED/skill_survival.json (query_server.py records them in each run JSON). `float32_copy` writes
the model with its floating-point tensors in float32: inherit_weight.py onto it writes W + lambda * v
in float32, which SERVED_DTYPE=float32 makes start_servers.sh and run_squad_pipeline.sh do.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from checkpoint_io import CheckpointError  # noqa: E402
from seal_squad.precision import cached_survival, float32_copy, report  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("measure", help="the share of the skill vector that survives in the served model")
    p.add_argument("--base_model", required=True, help="the plain base model W")
    p.add_argument("--served_model", required=True, help="W + lambda * v as vLLM serves it (inherit_weight.py's output)")
    p.add_argument("--skill_vector", required=True, help="v (.safetensors)")
    p.add_argument("--alpha", type=float, required=True, help="lambda")
    p = sub.add_parser("float32_copy", help="the model with its floating-point tensors in float32")
    p.add_argument("--model", required=True, help="HF model dir")
    p.add_argument("--output", required=True, help="the new model dir (must not exist)")
    args = parser.parse_args(argv)
    try:
        if args.step == "measure":
            print(report(cached_survival(args.base_model, args.served_model, args.skill_vector, args.alpha)))
        else:
            if Path(args.output).exists():
                parser.error(f"{args.output} exists")
            float32_copy(args.model, args.output)
            print(f"{args.model} in float32 -> {args.output}")
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        parser.error(str(e))


if __name__ == "__main__":
    main()
