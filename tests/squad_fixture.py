"""A small SQuAD-style data set the tests write themselves (the project's own text): six passages
under three titles, in SEAL's grouped schema and as raw SQuAD rows (one row per question, the
hub's rajpurkar/squad columns), so that both input formats and the grouping can be checked.

    PASSAGES         grouped: [{title, context, questions: [{question, answer}]}]
    raw_rows()       the same passages as rows, with extra reference answers, "_" in titles, the
                     paragraphs interleaved, and one unanswerable (SQuAD v2.0-style) question
    nested_json()    the original SQuAD JSON layout ({"data": [{title, paragraphs: [...]}]})
"""

import copy

def passage(title, context, *questions):
    return {"title": title, "context": context, "questions": [{"question": q, "answer": a} for q, a in questions]}


PASSAGES = [
    passage("Harbor Lighthouse",
            "The Harbor Lighthouse was built in 1871 on a granite ledge at the mouth of the bay. Its lamp was "
            "first fuelled by whale oil and later by kerosene. Keeper Anna Sorensen tended the light for "
            "thirty-two years, until it was automated in 1948.",
            ("When was the Harbor Lighthouse built?", "1871"),
            ("What did the lamp burn first?", "whale oil"),
            ("Who kept the light for thirty-two years?", "Anna Sorensen")),
    passage("Marsh Orchid",
            "The marsh orchid flowers in late June. Its seeds are as fine as dust and need a soil fungus to "
            "germinate, so the plant spreads slowly. In the valley it grows only in the wet meadow below the "
            "mill.",
            ("When does the marsh orchid flower?", "late June"),
            ("What do the seeds need to germinate?", "a soil fungus")),
    passage("Harbor Lighthouse",
            "A foghorn was added to the Harbor Lighthouse in 1902. It sounded two blasts every thirty seconds "
            "and could be heard eleven miles out at sea.",
            ("When was the foghorn added?", "1902"),
            ("How far out could the foghorn be heard?", "eleven miles")),
    passage("Copper Valley Railway",
            "The Copper Valley Railway opened in 1889 to carry ore from the Redstone mines to the smelter at "
            "Millford. Its steepest grade, on Cutter's Hill, needed two engines. Passenger service ended in "
            "1931.",
            ("What did the Copper Valley Railway carry?", "ore"),
            ("Where was the smelter?", "Millford"),
            ("Which hill had the steepest grade?", "Cutter's Hill"),
            ("When did passenger service end?", "1931")),
    passage("Marsh Orchid",
            "Botanists counted 412 flowering marsh orchids in the meadow in 2019, twice the number of a "
            "decade before, after grazing was stopped.",
            ("How many marsh orchids were counted in 2019?", "412"),
            ("What was stopped before the count rose?", "grazing")),
    passage("Copper Valley Railway",
            "The railway's engine No. 7, built by the Baldwin works, is kept in the Millford museum. It was "
            "restored by volunteers between 1994 and 2001.",
            ("Who built engine No. 7?", "the Baldwin works"),
            ("Where is engine No. 7 kept?", "the Millford museum")),
]
N_QUESTIONS = sum(len(p["questions"]) for p in PASSAGES)  # 15


def passages():
    return copy.deepcopy(PASSAGES)


def raw_rows():
    """The passages as SQuAD rows, "_" in the titles, every question with a second reference
    answer; passage 1's first row comes before passage 0's rows, and passage 0 has one
    unanswerable (SQuAD v2.0-style) question."""
    rows = []
    for p, passage in enumerate(PASSAGES):
        for q, qa in enumerate(passage["questions"]):
            rows.append({"id": f"p{p}q{q}", "title": passage["title"].replace(" ", "_"), "context": passage["context"],
                         "question": qa["question"], "answers": {"text": [qa["answer"], f"{qa['answer']} (alt)"],
                                                                 "answer_start": [0, 0]}})
    first_of_passage_1 = rows.pop(len(PASSAGES[0]["questions"]))
    rows.insert(0, first_of_passage_1)
    rows.insert(2, {"id": "unanswerable", "title": "Harbor_Lighthouse", "context": PASSAGES[0]["context"],
                    "question": "What colour is the lighthouse door?", "answers": {"text": [], "answer_start": []}})
    return rows


def grouped_raw_rows():
    """What grouping raw_rows() gives: passages in order of first appearance (1, 0, 2, 3, 4, 5)."""
    return [copy.deepcopy(PASSAGES[1]), copy.deepcopy(PASSAGES[0])] + passages()[2:]


def nested_json():
    data = {}
    for p, passage in enumerate(PASSAGES):
        article = data.setdefault(passage["title"], {"title": passage["title"].replace(" ", "_"), "paragraphs": []})
        article["paragraphs"].append({"context": passage["context"], "qas": [
            {"id": f"p{p}q{q}", "question": qa["question"], "answers": [{"text": qa["answer"], "answer_start": 0}]}
            for q, qa in enumerate(passage["questions"])]})
    return {"version": "1.1", "data": list(data.values())}


def grouped_nested_json():
    """What nested_json() gives: its articles' paragraphs in order (titles in order of first appearance)."""
    return [copy.deepcopy(PASSAGES[i]) for i in (0, 2, 1, 4, 3, 5)]
