"""The answer scorecard (`manage.py eval_answers`): the yardstick for every change to prompts,
retrieval, guards or models.

A question set (JSONL, `questions.py`; the sample one is chat/knowledge/sample/scorecard.jsonl)
is asked through the live answer path, as the chat API asks it (`runner.py`); each delivered
answer is scored by pure functions (`scoring.py`, with the phrase lexicons in `phrases.py`) and
the results add up to a report and a summary dict (`report.py`).

Modules: `questions` (the cases and their validation), `records` (what a run records of each
answer), `phrases` (what "offers a human", "apologises"... look like in English and Chinese),
`scoring`, `runner`, `report`, `selectors` (the reads the command needs).
"""
