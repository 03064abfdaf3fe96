r"""A fictional world, generated from a seed, in which PaST's effect can be measured on a CPU.

    python -m prepare_data.world --output_dir outputs/quickstart/world --seed 0

Every person of the world has six attributes. Three are *known kinds* (home town, trade, sport):
the pretraining corpus asks about them, so the base model learns to answer "where was X born?"
for people it has read about. Three are *skill kinds* (colour, pet, food): the pretraining corpus
asks about them for only a few people, and the passages' SFT never; the source passage's GRPO
(its LooGLE QA) and the evaluation do. So a target model that read its people's biographies
(stage-1 SFT) knows their colours but was barely taught to say them when asked; the skill vector
of the source's GRPO is what can teach it.

Written to --output_dir, all in LooGLE's format (input, title, qa_pairs with Q, A, S):
  passages.jsonl  one row per passage (--passages, each about --people_per_passage people no
                  other row mentions): `input` holds --bios_per_person biographies of each person,
                  `qa_pairs` one question per person and skill kind (the held-out QA: GRPO
                  prompts for a source, the evaluation for a target). Passage 0 is the usual source.
  pretrain.jsonl  the base model's corpus about --pretrain_people other people: biographies and
                  QA about the known kinds, and for a few (--pretrain_skill_share) about the skill
                  kinds too (scripts/make_tiny_model.py --pretrain_corpus)
  world.json      the seed, the sizes and every person's facts, for reading results
Each fact appears in several phrasings and sentence orders (Allen-Zhu & Li, "Physics of Language
Models, Part 3.1": extraction learned on some people carries over to others only then).
Answers are single lower-case words, so an exact-match judge grades them. Deterministic from
--seed; nothing is downloaded.
"""

import argparse
import json
import random
import re
from pathlib import Path

from utils import write_json_atomic

SYLLABLES = ("ka lo mi ve ra tu shi no pe zan dor el fi gar hum jo ko lin mar nev ol pri qua ros sel "
             "tam ur vik wen yul").split()
TOWN_PARTS = ("ash brook dale fen holm mere stead thorn wick ford").split()

KNOWN_KINDS = ("city", "job", "sport")
SKILL_KINDS = ("color", "pet", "food")
VALUES = {
    "city": "avon brell corvin dunmore elsbar fenwick galt hollis irvale jastor kelm lorne".split(),
    "job": "baker tailor miner sailor farmer potter weaver mason smith fisher hunter scribe".split(),
    "sport": "chess tennis rowing fencing archery polo golf judo boxing skiing".split(),
    "color": "red blue green amber violet white black orange teal gray".split(),
    "pet": "cat dog parrot rabbit ferret hamster tortoise goat lizard owl".split(),
    "food": "rice bread cheese soup figs plums beans honey pears olives".split(),
}
SENTENCES = {
    "city": ["{name} was born in {value}.", "{name} grew up in the town of {value}.", "The birthplace of {name} is {value}."],
    "job": ["{name} works as a {value}.", "{name} earns a living as a {value}.", "By trade {name} is a {value}."],
    "sport": ["{name} plays {value}.", "The sport {name} loves is {value}.", "{name} spends weekends at {value}."],
    "color": ["{name} likes the color {value}.", "The favorite color of {name} is {value}.", "{name} always wears {value}."],
    "pet": ["{name} keeps a {value}.", "The pet of {name} is a {value}.", "{name} lives with a {value}."],
    "food": ["{name} eats {value} daily.", "The favorite food of {name} is {value}.", "{name} cooks {value} often."],
}
QUESTIONS = {
    "city": "Where was {name} born?", "job": "What is the job of {name}?", "sport": "Which sport does {name} play?",
    "color": "What color does {name} like?", "pet": "What pet does {name} keep?", "food": "What food does {name} eat?",
}


class World:
    """The people of one seeded world and the text about them."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self._names = set()

    def _name(self):
        while True:
            first = "".join(self.rng.choice(SYLLABLES) for _ in range(2)).capitalize()
            last = "".join(self.rng.choice(SYLLABLES) for _ in range(2)).capitalize()
            if f"{first} {last}" not in self._names:
                self._names.add(f"{first} {last}")
                return f"{first} {last}"

    def people(self, n):
        return [{"name": self._name(), **{kind: self.rng.choice(v) for kind, v in VALUES.items()}} for _ in range(n)]

    def town(self):
        return "".join(self.rng.choice(SYLLABLES) for _ in range(2)).capitalize() + self.rng.choice(TOWN_PARTS)

    def biography(self, person):
        """The person's six facts, each in a randomly chosen phrasing, in a random order."""
        kinds = list(VALUES)
        self.rng.shuffle(kinds)
        return " ".join(self.rng.choice(SENTENCES[k]).format(name=person["name"], value=person[k]) for k in kinds)

    def document(self, people, bios_per_person):
        """Every person's biographies, one paragraph each, shuffled together."""
        # Each paragraph starts "- " so that a name is tokenised the same at its start as anywhere else.
        paragraphs = ["- " + self.biography(p) for p in people for _ in range(bios_per_person)]
        self.rng.shuffle(paragraphs)
        return "\n".join(paragraphs)


NAME = r"[A-Z][a-z]+ [A-Z][a-z]+"
# Every phrasing of every fact, as a pattern over the passage text: what the `world` proposer reads.
_FACT_PATTERNS = [
    (kind, re.compile(re.escape(template).replace(re.escape("{name}"), f"(?P<name>{NAME})").replace(re.escape("{value}"), r"(?P<value>[a-z]+)")))
    for kind, templates in SENTENCES.items() for template in templates
]


def facts_in(text, kinds=KNOWN_KINDS):
    """[(name, kind, value)] of every sentence of `text` that states a fact of `kinds`, in text order."""
    found = []
    for kind, pattern in _FACT_PATTERNS:
        if kind in kinds:
            found.extend((m.start(), m["name"], kind, m["value"]) for m in pattern.finditer(text))
    return [fact for _, *fact in sorted(found)]


def qa_pairs(people, kinds):
    """One question per person and kind; S is a sentence of the passage that holds the answer."""
    return [{"Q": QUESTIONS[k].format(name=p["name"]), "A": p[k], "S": SENTENCES[k][0].format(name=p["name"], value=p[k]), "type": k}
            for p in people for k in kinds]


def build(seed, passages, people_per_passage, bios_per_person, pretrain_people, pretrain_bios_per_person, pretrain_skill_share):
    """(passage rows, pretraining rows, facts) of the world of `seed`."""
    world = World(seed)
    # The pretraining people come first, so a world's base model does not change with --passages.
    pretrain_groups = [world.people(people_per_passage) for _ in range(-(-pretrain_people // people_per_passage))]
    passage_groups = [world.people(people_per_passage) for _ in range(passages)]
    # A few pretraining people are also asked about the skill kinds: the base model has a faint
    # notion of those questions (so GRPO's first rollouts are sometimes right), far from the skill.
    pretrain_rows = [
        {"title": f"The people of {world.town()}", "input": world.document(group, pretrain_bios_per_person),
         "qa_pairs": [qa for p in group for qa in qa_pairs([p], KNOWN_KINDS + SKILL_KINDS * (world.rng.random() < pretrain_skill_share))]}
        for group in pretrain_groups
    ]
    passage_rows = [
        {"title": f"The people of {world.town()}", "input": world.document(group, bios_per_person),
         "qa_pairs": qa_pairs(group, SKILL_KINDS)}
        for group in passage_groups
    ]
    facts = {"passages": passage_groups, "pretrain": pretrain_groups}
    return passage_rows, pretrain_rows, facts


def write_jsonl_atomic(path, rows):
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="writes passages.jsonl, pretrain.jsonl and world.json here")
    parser.add_argument("--seed", type=int, default=0, help="the world's seed (WORLD_SEED; default 0)")
    parser.add_argument("--passages", type=int, default=3, help="passages to write (default 3: a source and two targets)")
    parser.add_argument("--people_per_passage", type=int, default=12, help="people each passage is about (default 12)")
    parser.add_argument("--bios_per_person", type=int, default=3, help="biographies of each person in its passage (default 3)")
    parser.add_argument("--pretrain_people", type=int, default=120, help="people of the pretraining corpus (default 120)")
    parser.add_argument("--pretrain_bios_per_person", type=int, default=3, help="their biographies each (default 3)")
    parser.add_argument("--pretrain_skill_share", type=float, default=0.15,
                        help="share of the pretraining people also asked about the skill kinds (default 0.15)")
    args = parser.parse_args(argv)
    for name in ("passages", "people_per_passage", "bios_per_person", "pretrain_people", "pretrain_bios_per_person"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.pretrain_skill_share <= 1:
        parser.error(f"--pretrain_skill_share is a share, from 0 to 1; got {args.pretrain_skill_share}")
    n_people = args.people_per_passage * args.passages + args.pretrain_people
    n_names = len(SYLLABLES) ** 4
    if n_people > n_names // 4:
        parser.error(f"{n_people} people need more distinct names than the world's {n_names // 4:,} (ask for fewer people)")

    passage_rows, pretrain_rows, facts = build(args.seed, args.passages, args.people_per_passage, args.bios_per_person,
                                               args.pretrain_people, args.pretrain_bios_per_person, args.pretrain_skill_share)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "passages.jsonl", passage_rows)
    write_jsonl_atomic(out / "pretrain.jsonl", pretrain_rows)
    write_json_atomic(out / "world.json", {"seed": args.seed, "known_kinds": KNOWN_KINDS, "skill_kinds": SKILL_KINDS,
                                           "settings": vars(args), **facts})
    print(f"world {args.seed}: {args.passages} passages x {args.people_per_passage} people "
          f"({len(passage_rows[0]['qa_pairs'])} skill-kind questions each), {len(pretrain_rows)} pretraining documents "
          f"about {sum(len(g) for g in facts['pretrain'])} people -> {out}")


if __name__ == "__main__":
    main()
