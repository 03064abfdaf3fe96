"""Every prompt template PaST uses, in one place: stage-1 tasks (summary, recall, continue),
the QA proposers (JSON list, or questions-then-answers), the closed-book solver, and the
judge's graders by name (their verdict rules are in judge.py).

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

# squad: SEAL's grading protocol for SQuAD knowledge incorporation, in this project's words.
SQUAD_JUDGE_SYSTEM_PROMPT = "You grade a student's answer to a question by comparing it with the gold answer."
SQUAD_JUDGE_TEMPLATE = (
    "Question: {question}\n"
    "Gold answer: {reference}\n"
    "Student answer: {response}\n\n"
    "Judging solely by the gold answer, is the student answer correct? The student answer may "
    "say more than the gold answer, as long as it conveys the gold answer and does not "
    "contradict it. Style, phrasing and length do not matter.\n"
    "Reply with yes or no only."
)

JUDGE_PROMPTS = {
    "loogle": (LOOGLE_JUDGE_SYSTEM_PROMPT, LOOGLE_JUDGE_TEMPLATE),
    "squad": (SQUAD_JUDGE_SYSTEM_PROMPT, SQUAD_JUDGE_TEMPLATE),
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
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": template.format(question=question, reference=reference, response=response)},
    ]
