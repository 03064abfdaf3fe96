"""Every prompt template PaST uses, in one place: stage-1 tasks (summary, recall, continue),
the QA proposers (JSON list, or questions-then-answers), the closed-book solver, the
judge's graders by name (their verdict rules are in judge.py), and the SQuAD setting's raw
prompts (implications, answers).

Templates are plain `str.format` strings; each has a small function that fills it, so callers
never format templates themselves. This module imports nothing heavy: the reward function
and the judge server import it.
"""

# --- Stage 1: inject the passage's knowledge -------------------------------------------------

SUMMARY_TEMPLATE = (
    "Summarize the following excerpt from the document \"{title}\". Keep every name, date, number "
    "and fact it states; do not add anything that is not in the excerpt.\n\n"
    "Excerpt:\n{chunk}\n\nSummary:"
)

# recall/continue are built from the passage alone (no model): the answer is a verbatim span.
RECALL_TEMPLATE = (
    "Recite, word for word, part {part} of {n_parts} of the document \"{title}\"."
)
CONTINUE_TEMPLATE = (
    "Continue the following text from the document \"{title}\" exactly as it appears in the "
    "document.\n\n{prefix}"
)

# --- Stage 2 / RL data: questions about the passage -------------------------------------------

PROPOSER_TEMPLATE = (
    "You are writing a reading-comprehension test about the document \"{title}\".\n"
    "From the excerpt below, write {n_questions} question-answer pairs. Each question must be "
    "answerable from the excerpt alone, must name what it is about (no \"the passage\" or "
    "\"the text\"), and each answer must be short and factual.\n"
    "Reply with a JSON list only, like "
    "[{{\"question\": \"...\", \"answer\": \"...\"}}].\n\n"
    "Excerpt:\n{chunk}"
)

# The two-step proposer, for generators that cannot be relied on to write JSON: questions
# first (one per line), then each answered with the excerpt in context (CONTEXT_SOLVER_TEMPLATE).
QUESTIONS_TEMPLATE = (
    "You are writing a reading-comprehension test about the document \"{title}\".\n"
    "From the excerpt below, write {n_questions} questions, one per line. Each question must be "
    "answerable from the excerpt alone and must name what it is about (no \"the passage\" or "
    "\"the text\"). Reply with the questions only.\n\n"
    "Excerpt:\n{chunk}"
)

# The `cloze` proposer (prepare_data/cloze.py, no model): a sentence of the document with one
# span blanked; the answer is the span.
CLOZE_TEMPLATE = "Fill in the blank in this sentence from \"{title}\": {sentence}"

# Closed-book: the model must answer from what it learned, not from a context.
SOLVER_TEMPLATE = (
    "Answer the following question about \"{title}\" from your knowledge of that document. "
    "Give a short, direct answer.\n\nQuestion: {question}\nAnswer:"
)

# GSM8K-style maths: worked steps, then a final "Answer:" line that utils.extract_answer reads.
MATH_TEMPLATE = (
    "Solve the following problem step by step. End with a final line of the form "
    "\"Answer: <number>\".\n\nProblem: {question}"
)

# Passage in context: the knowledge upper bound (LooGLE's QA prompt order: instruction, text,
# question, answer cue).
CONTEXT_SOLVER_TEMPLATE = (
    "Please answer the question based on the long text below. Give a short, direct answer.\n\n"
    "Long text:\n{context}\n\nQuestion: {question}\nAnswer:"
)

# --- Judge graders (a request's "grader"; judge.py holds each one's verdict rule) ---------

# loogle: the LooGLE convention: yes/no against the gold answer, style ignored, extra
# information allowed only if it does not contradict the gold answer.
LOOGLE_JUDGE_SYSTEM_PROMPT = (
    "You are a strict grader. You decide whether a response answers a question correctly, "
    "judged only against the gold answer."
)
LOOGLE_JUDGE_TEMPLATE = (
    "Question: {question}\n"
    "Gold answer: {reference}\n"
    "Response: {response}\n\n"
    "Does the response give the same answer as the gold answer? Ignore wording, style, length "
    "and formatting. Extra information is acceptable only if it does not contradict the gold "
    "answer. A response that hedges between several answers, refuses, or is empty is wrong.\n"
    "Reply with exactly one word: yes or no."
)

# squad: SEAL's grader, verbatim. Copied from SEAL (github.com/Continual-Intelligence/SEAL,
# knowledge-incorporation/src/utils.py, SQUAD_GRADE_TEMPLATE; MIT licence, Copyright (c) 2025 Adam
# Zweiger), with its placeholders {gold} and {pred} renamed {reference} and {response}: the text
# sent is SEAL's. SEAL sends it as the only message, with the user role and no system message.
SQUAD_JUDGE_TEMPLATE = (
    "You are a grading assistant. Your job is to determine whether a student's answer correctly answers the question based solely on the provided gold answer. "
    "Do not use any outside knowledge. The student answer can include additional information, but it must at least fully convey the gold answer and must not contradict it. "
    "Ignore style, phrasing, or extra details that do not affect correctness. Respond ONLY with 'yes' or 'no'.\n\n"
    "Question: {question}\nGold answer: {reference}\nStudent answer: {response}\n"
    "Is the student answer correct based solely on the gold answer? Respond 'yes' or 'no'."
)

# grader -> (system message or None, user message template)
JUDGE_PROMPTS = {
    "loogle": (LOOGLE_JUDGE_SYSTEM_PROMPT, LOOGLE_JUDGE_TEMPLATE),
    "squad": (None, SQUAD_JUDGE_TEMPLATE),
}


def summary_prompt(title, chunk):
    return SUMMARY_TEMPLATE.format(title=title, chunk=chunk)


def recall_prompt(title, part, n_parts):
    return RECALL_TEMPLATE.format(title=title, part=part, n_parts=n_parts)


def continue_prompt(title, prefix):
    return CONTINUE_TEMPLATE.format(title=title, prefix=prefix)


def proposer_prompt(title, chunk, n_questions):
    return PROPOSER_TEMPLATE.format(title=title, chunk=chunk, n_questions=n_questions)


def questions_prompt(title, chunk, n_questions):
    return QUESTIONS_TEMPLATE.format(title=title, chunk=chunk, n_questions=n_questions)


def cloze_question(title, sentence):
    return CLOZE_TEMPLATE.format(title=title, sentence=sentence)


def solver_prompt(title, question):
    return SOLVER_TEMPLATE.format(title=title, question=question)


def math_prompt(question):
    return MATH_TEMPLATE.format(question=question)


def context_solver_prompt(context, question):
    return CONTEXT_SOLVER_TEMPLATE.format(context=context, question=question)


def judge_messages(question, reference, response, grader="loogle"):
    """Chat messages for one judge call under `grader` (OpenAI chat-completions format)."""
    if grader not in JUDGE_PROMPTS:
        raise ValueError(f"unknown grader {grader!r}: known graders are {', '.join(JUDGE_PROMPTS)}")
    system, template = JUDGE_PROMPTS[grader]
    user = {"role": "user", "content": template.format(question=question, reference=reference, response=response)}
    return [{"role": "system", "content": system}, user] if system else [user]


# --- SQuAD knowledge incorporation (SEAL's protocol, SEAL/general-knowledge/) --------------------
#
# Raw completion prompts for a base model (no chat template): SEAL's own, verbatim, so that rows
# compare with SEAL's published ones. Copied from SEAL (github.com/Continual-Intelligence/SEAL, MIT
# licence, Copyright (c) 2025 Adam Zweiger): the implication prompts from
# knowledge-incorporation/src/data_generation/make_squad_data.py (MAKE_SQUAD_DATA_TEMPLATES_BASE),
# the answer prompt from knowledge-incorporation/src/utils.py (SQUAD_ANSWER_TEMPLATE_BASE; its final
# newline after "Answer:" is part of it). Another wording can be given in a file instead
# (`load_prompt_template`). Implication prompts fill {title} and {context}; the answer prompt fills
# {question}, which is `squad_question(title, question)`.

IMPLICATIONS_TEMPLATES = {
    # list of implications: the default, used for SEAL's evaluation table
    "implications": (
        "Let's read the following passage and produce a list of implications "
        "derived directly or indirectly from the content.\n\n"
        "Passage:\n{title}\n{context}\n\n"
        "Implications:\n"
    ),
    "implications-long": (
        "Let's read the following passage and produce a long list of implications "
        "derived directly or indirectly from the content.\n\n"
        "Passage:\n{title}\n{context}\n\n"
        "Implications:\n"
    ),
    "implications-very-long": (
        "Let's read the following passage and produce a very long list of implications "
        "derived directly or indirectly from the content.\n\n"
        "Passage:\n{title}\n{context}\n\n"
        "Implications:\n"
    ),
    "rewrite": (
        "Let's read the following passage and rewrite it in a few different ways, each one separated by a newline.\n\n"
        "Passage:\n{title}\n{context}\n\n"
        "Rewritten passages:\n"
    ),
    # Ends inside the first question: the completion continues it, and the sequence builder puts
    # the "Question 1: " cue back in front of its first segment.
    "self-qa": (
        "Let's read the following passage and rewrite it in a question-answer format.\n\n"
        "Passage:\n{title}\n{context}\n\n"
        "Question 1: "
    ),
}
DEFAULT_IMPLICATIONS_PROMPT = "implications"

SQUAD_ANSWER_TEMPLATE = (
    "Let's answer a question directly and concisely.\n"
    "Question: {question}\n"
    "Answer:\n"
)
IMPLICATIONS_FIELDS = ("title", "context")
ANSWER_FIELDS = ("question",)


def squad_question(title, question):
    """A question as the model answers it and the grader sees it: the passage's title as its topic
    (closed book, the title is the only hint which passage is meant)."""
    return f"Topic: {title}\n{question}"


def implications_prompt(title, context, template=IMPLICATIONS_TEMPLATES[DEFAULT_IMPLICATIONS_PROMPT]):
    return template.format(title=title, context=context)


def squad_answer_prompt(question, template=SQUAD_ANSWER_TEMPLATE):
    """`question` is `squad_question(title, question)`."""
    return template.format(question=question)


def load_prompt_template(path, fields):
    """A `str.format` template from a text file, verbatim (a final newline is part of it), checked
    to fill exactly `fields` (e.g. IMPLICATIONS_FIELDS): a missing or unknown {placeholder} is an
    error naming the file. Literal braces are written {{ and }}."""
    from pathlib import Path
    from string import Formatter

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt template file not found: {path}")
    template = path.read_text(encoding="utf-8")
    try:
        used = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"{path}: not a str.format template ({e}); write literal braces as {{{{ and }}}}") from None
    expected = set(fields)
    if used != expected:
        placeholders = ", ".join("{" + f + "}" for f in fields)
        raise ValueError(f"{path}: the template must use exactly the placeholders {placeholders}; "
                         f"found {sorted(used) or 'none'}")
    return template
