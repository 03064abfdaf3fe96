"""One self-edit completion -> the training sequences of its passage (SEAL's rule).

1. The completion is split on `---` into segments (empty ones dropped).
2. With split_newlines (SEAL's evaluation runs):
   - question-answer text (it contains "Question N:" and "Answer:") is split before each
     "Question N:" at the start of a line; a first segment without its "Question" cue (the
     self-qa prompt ends with "Question 1: ", so the completion starts inside question 1) gets
     "Question 1: " put back in front;
   - otherwise every non-empty line is a sequence, and a first line is dropped when the second
     starts with "1." (an intro such as "Here are the implications:").
3. Each sequence is `title + "\\n" + segment`; the passage itself, `title + "\\n" + context`, is
   always the last sequence. An empty completion gives the passage alone ("passage only").

Junk that a base model writes after its list (a source list, a repeated heading) is kept, as
in SEAL: filtering it would change what is measured.
"""

import re

_QUESTION = re.compile(r"Question\s+\d+:")
_ANSWER = re.compile(r"Answer\s*:")
_QUESTION_START = re.compile(r"\n(?=Question\s+\d+:)")


def sequence(title, text):
    return f"{title}\n{text}"


def passage_sequence(title, context):
    return sequence(title, context.strip())


def completion_segments(completion, split_newlines=True):
    """The pieces of one completion that become sequences (without the title, without the passage)."""
    completion = completion.strip()
    if not completion:
        return []
    segments = [s.strip() for s in completion.split("---") if s.strip()]
    if not split_newlines:
        return segments
    if _QUESTION.search(completion) and _ANSWER.search(completion):
        # Question-answer text is split as a whole (a `---` inside stays with its question).
        segments = [s.strip() for s in _QUESTION_START.split(completion) if s.strip()]
        if not segments[0].startswith("Question"):
            segments[0] = "Question 1: " + segments[0]
        return segments
    lines = [line.strip() for segment in segments for line in segment.splitlines() if line.strip()]
    if len(lines) > 1 and lines[1].startswith("1."):
        lines = lines[1:]
    return lines


def training_sequences(title, context, completion="", split_newlines=True):
    """The sequences TTT trains on for one passage and one completion; the passage is last."""
    segments = completion_segments(completion, split_newlines)
    return [sequence(title, s) for s in segments] + [passage_sequence(title, context)]
