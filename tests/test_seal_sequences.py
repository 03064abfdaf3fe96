"""seal_squad.sequences: a self-edit completion -> the training sequences of its passage."""

from seal_squad.sequences import completion_segments, training_sequences

TITLE = "Harbor Lighthouse"
CONTEXT = "The Harbor Lighthouse was built in 1871 on a granite ledge.  "
PASSAGE = f"{TITLE}\nThe Harbor Lighthouse was built in 1871 on a granite ledge."


def test_numbered_list_one_sequence_per_line_intro_dropped():
    completion = ("Here are the implications of the passage:\n"
                  "1. The lighthouse is older than 1900.\n\n"
                  "2. It stands on rock.\n"
                  "   3. Ships entering the bay pass it.   \n")
    assert training_sequences(TITLE, CONTEXT, completion) == [
        f"{TITLE}\n1. The lighthouse is older than 1900.",
        f"{TITLE}\n2. It stands on rock.",
        f"{TITLE}\n3. Ships entering the bay pass it.",
        PASSAGE,
    ]


def test_first_line_is_kept_unless_the_second_starts_the_list():
    completion = "The light was built in 1871.\nIt is on a ledge.\n1. A third line"
    assert completion_segments(completion) == ["The light was built in 1871.", "It is on a ledge.", "1. A third line"]


def test_dashes_split_segments_and_lines_within_them():
    completion = "First rewrite, line one.\nLine two.\n---\nSecond rewrite.\n---\n\n---\nThird rewrite."
    assert completion_segments(completion) == ["First rewrite, line one.", "Line two.", "Second rewrite.", "Third rewrite."]
    # Without the newline split (SEAL's multi-passage runs), a segment is one sequence.
    assert training_sequences(TITLE, CONTEXT, completion, split_newlines=False) == [
        f"{TITLE}\nFirst rewrite, line one.\nLine two.", f"{TITLE}\nSecond rewrite.", f"{TITLE}\nThird rewrite.", PASSAGE]


def test_question_answer_text_splits_before_each_question():
    # The self-qa prompt ends with "Question 1: ", so the completion starts inside question 1.
    completion = ("When was the lighthouse built?\nAnswer: In 1871.\n"
                  "Question 2: What does it stand on?\nAnswer: A granite ledge.\n"
                  "Question 3: Is it old?\n\nAnswer: Yes --- very.")
    assert training_sequences(TITLE, CONTEXT, completion) == [
        f"{TITLE}\nQuestion 1: When was the lighthouse built?\nAnswer: In 1871.",
        f"{TITLE}\nQuestion 2: What does it stand on?\nAnswer: A granite ledge.",
        f"{TITLE}\nQuestion 3: Is it old?\n\nAnswer: Yes --- very.",
        PASSAGE,
    ]
    # Mentions of questions without answers are ordinary lines.
    assert completion_segments("Question 1: why?\nQuestion 2: how?") == ["Question 1: why?", "Question 2: how?"]


def test_a_junk_tail_is_kept_as_in_seal():
    completion = ("1. The lighthouse predates the foghorn.\n2. Keepers lived on site.\n"
                  "References\n[1] Coast Guard archive, box 12\nImplications:\n\n\n")
    segments = completion_segments(completion)
    assert segments[-3:] == ["References", "[1] Coast Guard archive, box 12", "Implications:"]
    assert len(training_sequences(TITLE, CONTEXT, completion)) == 6


def test_empty_completion_gives_the_passage_only():
    for empty in ("", "   \n\n", "---\n---"):
        assert training_sequences(TITLE, CONTEXT, empty) == [PASSAGE]
        assert training_sequences(TITLE, CONTEXT, empty, split_newlines=False) == [PASSAGE]
    assert training_sequences(TITLE, CONTEXT) == [PASSAGE]  # "passage only"
