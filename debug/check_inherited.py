"""Check that an inherited model is exactly target + λ·skill, recomputed from its inputs.

    python debug/check_inherited.py --inherited OUT --target T --skill_vector V [V2 ...] [--alpha λ [λ2 ...]]
    python debug/check_inherited.py --inherited OUT --target T --grpo_model RL --base_model BASE [--alpha λ]

Recomputes every tensor the way inherit_weight.py computes it (float32, one cast to the target's
dtype; the same --exclude and --shared_vocab_rows) and compares it bit for bit with what OUT
stores, tensor by tensor. Reports the first differing tensors (as debug/compare_checkpoints.py
does, with A = OUT and B = the recomputed tensor), tensors missing from OUT or extra in it,
whether OUT's config ties the embeddings as the operator would have, and what OUT's metadata says
it was made from (`past_transfer`), so that a wrong λ or a wrong target shows up as such.

Exit code: 0 when OUT is exactly what the operator computes from these inputs, 1 when it is not,
2 when an input cannot be read or the inputs do not fit together.
"""

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file from anywhere

from checkpoint_io import CheckpointReader, one_line_errors  # noqa: E402
from debug.compare_checkpoints import difference, report  # noqa: E402
from inherit_weight import SkillSource, plan_target, stream_inherited  # noqa: E402


def check(inherited, target, grpo_model=None, base_model=None, skill_vectors=(), alphas=1.0, exclude=None,
          shared_vocab_rows=False):
    """(rows as compare_checkpoints.difference gives them, names the operator does not write, names it
    writes that are missing, notes)."""
    skill = SkillSource(grpo_model, base_model, skill_vectors, alphas)
    plan = plan_target(skill, target, None, exclude, shared_vocab_rows)
    rows, notes = [], []
    with CheckpointReader(inherited) as out:
        expected_tied = plan.reader.tied and not plan.untie
        if out.tied != expected_tied:
            notes.append(f"config: tie_word_embeddings is {out.tied} in {inherited}, the operator writes "
                         f"{expected_tied} ({plan.embeddings_note})")
        if "past_transfer" in out.metadata:
            notes.append(f"{inherited} says it was made from: {out.metadata['past_transfer']}")
        for name, expected in stream_inherited(skill, plan):
            if name in out.tensors:
                info = out.info(name)
                if info.shape != tuple(expected.shape) or info.dtype != expected.dtype:
                    rows.append(difference(name, [], note=f"{info.dtype} {list(info.shape)} instead of "
                                                          f"{expected.dtype} {list(expected.shape)}"))
                else:
                    rows.append(difference(name, [(out.get(name), expected)]))
        written = set(plan.sources)
        return rows, sorted(set(out.tensors) - written), sorted(written - set(out.tensors)), notes


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inherited", required=True, help="the model dir inherit_weight.py wrote")
    parser.add_argument("--target", required=True, help="the target model it was made from")
    parser.add_argument("--skill_vector", nargs="+", default=[], metavar="FILE", help="saved skill vector(s)")
    parser.add_argument("--grpo_model", help="the RL result (instead of --skill_vector)")
    parser.add_argument("--base_model", help="the checkpoint RL started from (with --grpo_model)")
    parser.add_argument("--alpha", nargs="+", type=float, default=[1.0], help="lambda per vector (default 1.0)")
    parser.add_argument("--exclude", help="the --exclude regex the model was made with")
    parser.add_argument("--shared_vocab_rows", action="store_true", help="it was made with --shared_vocab_rows")
    parser.add_argument("--show", type=int, default=10, help="how many differing tensors to list (default 10)")
    args = parser.parse_args(argv)
    rows, extra, missing, notes = check(args.inherited, args.target, args.grpo_model, args.base_model,
                                        args.skill_vector, args.alpha, args.exclude, args.shared_vocab_rows)
    for note in notes:
        print(note)
    problems = report(rows, extra, missing, args.show, "extra (the operator does not write it)",
                      "missing (the operator writes it)")
    exact = not problems and not any(n.startswith("config:") for n in notes)
    alphas = json.dumps(args.alpha if len(args.alpha) > 1 else args.alpha[0])
    print(f"{args.inherited} {'IS' if exact else 'is NOT'} exactly target + alpha * skill (alpha = {alphas}): "
          f"{sum(not r['equal'] for r in rows)} of {len(rows)} tensors differ (A = inherited, B = recomputed), "
          f"{len(missing)} missing, {len(extra)} extra")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
