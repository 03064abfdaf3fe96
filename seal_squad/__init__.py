"""Library of the SQuAD knowledge-incorporation setting (SEAL's protocol, paper §5.1.1); the
entry points that use it are the scripts in SEAL/general-knowledge/ (see SEAL/README.md).

    data       SQuAD passages in SEAL's grouped schema: loading, checking, seeded selection
    sequences  a self-edit completion -> the training sequences of one passage
    ttt        test-time training: one peft LoRA per passage, SEAL's recipe
    serving    a vLLM server with runtime LoRA loading: load, answer, unload
    precision  how much of the skill vector survives in the served dtype; a float32 base to serve it
    grading    answers -> verdicts through the judge server's SQuAD grader
    results    per-question verdicts -> SEAL's run JSON (macro mean over passages)
"""
