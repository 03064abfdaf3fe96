"""The source stage of PaST's SQuAD setting: what a round's knowledge SFT and GRPO train on, and
the gate between them.

Round k takes its own SQuAD train passages S_k (squad_data.py: SEAL's seeded selection at
positions start + (k-1)*n .. start + k*n - 1 of the shuffle, so the rounds are disjoint, and
--exclude with the evaluation passages, which they must not share). Per round:

  SFT rows   one raw text per row: the training sequences TTT uses (seal_squad.sequences) for
             every passage and each of its completions, the passage itself once per passage
  GRPO rows  verl's RLHFDataset schema, one per question: prompt = the raw answer prompt
             (prompts.squad_answer_prompt of "Topic: <title>\\n<question>") as one user message,
             which the pass-through chat template hands to the model unchanged; data_source
             "squad"; reward_model.ground_truth = the answer; extra_info = {index, passage_id,
             title, question (with its Topic line, what the grader sees)}
  gate       the SFT model must answer its own source questions clearly better than the base
             model (macro accuracy, SEAL's aggregation) before GRPO: RL on a model that does not
             know the passages has nothing to reinforce

A passage_id is the passage's position in the seeded shuffle (squad_data.py records it; else its
place in the file).
"""

from prompts import SQUAD_ANSWER_TEMPLATE, squad_answer_prompt, squad_question
from seal_squad.sequences import training_sequences

DATA_SOURCE = "squad"
GATE_MARGIN = 0.05  # accuracy points (0-1) the SFT model must gain over the base model


def sft_rows(items, split_newlines=True):
    """Raw-text SFT rows {text, passage_id, title} for passages with completions (implications)."""
    rows = []
    for position, item in enumerate(items):
        sequences = [s for completion in item.get("completions") or [""]
                     for s in training_sequences(item["title"], item["context"], completion, split_newlines)]
        for text in dict.fromkeys(sequences):  # the passage (last of every completion's list) once
            rows.append({"text": text, "passage_id": item.get("passage_id", position), "title": item["title"]})
    return rows


def grpo_rows(items, template=SQUAD_ANSWER_TEMPLATE):
    """verl RLHFDataset rows, one per question of the passages."""
    rows = []
    for position, item in enumerate(items):
        for q in item["questions"]:
            question = squad_question(item["title"], q["question"])
            rows.append({
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": squad_answer_prompt(question, template)}],
                "ability": "knowledge",
                "reward_model": {"style": "model", "ground_truth": q["answer"]},
                "extra_info": {"index": len(rows), "passage_id": item.get("passage_id", position), "title": item["title"],
                               "question": question},
            })
    return rows


def macro_accuracy(verdicts_per_passage):
    """SEAL's aggregation: the mean over passages of each passage's share of correct answers."""
    means = [sum(v) / len(v) for v in verdicts_per_passage if v]
    if not means:
        raise ValueError("no graded questions")
    return sum(means) / len(means)


def gate_decision(sft_accuracy, base_accuracy, margin=GATE_MARGIN):
    """(passed, message): the SFT model must beat the base model by at least `margin` on its
    own source questions."""
    gain = sft_accuracy - base_accuracy
    passed = gain >= margin - 1e-9  # accuracies are ratios: 0.25 - 0.20 must count as 0.05
    verdict = "passed" if passed else "FAILED"
    message = (f"knowledge gate {verdict}: the SFT model answers {100 * sft_accuracy:.1f}% of its source questions, the"
               f" base model {100 * base_accuracy:.1f}% (gain {100 * gain:+.1f} points, margin {100 * margin:.1f})")
    if not passed:
        message += (". GRPO on a model that does not know its passages has nothing to reinforce: train the knowledge"
                    " SFT longer or harder (SFT_EPOCHS, SFT_LR), or accept it with GATE_OVERRIDE=1")
    return passed, message
