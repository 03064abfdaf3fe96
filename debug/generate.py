r"""Generate from a checkpoint for a few prompts, through generation.py: the chat template,
decoding and backends that data generation and evaluation use.

    python debug/generate.py --model checkpoints/passage0/stage2/final --prompt "Who was the first keeper?" \
        --title "The Varrow Lighthouse Cooperative"
    python debug/generate.py --model M --prompt "..." --prompt "..." --temperature 0.7 --n 3

Each --prompt is one user turn; with --title it is wrapped in the closed-book question prompt
the evaluation and GRPO use (prompts.solver_prompt), so you see what the model answers there.
Greedy by default (--temperature 0); sampling is seeded (--seed), so a rerun repeats it.
"""

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a file: import this checkout's modules

from generation import BACKENDS, make_generator  # noqa: E402
from prompts import solver_prompt  # noqa: E402
from utils import is_hub_id  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="HF model dir or hub id (a served model name with --backend openai)")
    parser.add_argument("--prompt", action="append", required=True, help="a user message; repeat for several")
    parser.add_argument("--title", help="wrap each prompt as a closed-book question about this document (the eval prompt)")
    parser.add_argument("--backend", default="hf", choices=BACKENDS, help="hf (default, CPU or GPU), vllm, openai")
    parser.add_argument("--base_url", help="openai backend: OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--max_new_tokens", type=int, default=128, help="default: 128")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=1, help="completions per prompt (>1 needs --temperature > 0)")
    args = parser.parse_args(argv)
    if args.backend != "openai" and not Path(args.model).is_dir() and not is_hub_id(args.model):
        parser.error(f"--model {args.model!r} is neither a local model directory nor a hub id such as Qwen/Qwen2.5-7B-Instruct")
    if args.max_new_tokens < 1 or args.n < 1:
        parser.error("--max_new_tokens and --n must be >= 1")

    prompts = [solver_prompt(args.title, p) if args.title else p for p in args.prompt]
    options = {"base_url": args.base_url} if args.backend == "openai" else {}
    generator = make_generator(args.backend, args.model, **options)
    outputs = generator.generate([[{"role": "user", "content": p}] for p in prompts], args.max_new_tokens,
                                 args.temperature, args.top_p, args.seed, args.n)
    for k, (prompt, completions) in enumerate(zip(prompts, outputs)):
        print(f"### prompt {k}\n{prompt}")
        for j, completion in enumerate(completions):
            print(f"--- completion {j}\n{completion}")
        print()


if __name__ == "__main__":
    main()
