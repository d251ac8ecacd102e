"""Actions: calls the bot may make to the company's back end for a customer, such as looking
up or cancelling an order. An action is data (admin, `manage.py import_actions`), not code;
see docs/actions.md.

- `models`: Action (the definition) and ActionCall (one call, on the conversation's record).
- `validation`, with `schema`, `url_template`, `headers`, `results`, `triggers`,
  `placeholders`: what makes a definition valid, and how each part is used at call time.
- `calling`: `call()`, one checked HTTP call, returning an `outcome.Outcome`.
- `limits`: calls per answer and per conversation hour.
- `triggers.matching_triggers`: actions a customer's message picks by pattern.
- `selectors` / `services`: reads and writes; `services.call_confirm` is the exactly-once
  confirmation of a call that changes something.
- `tools`: actions as OpenAI-style tool definitions for the model (offered, and its calls
  decided, by chat/answering/proposing.py).
- `texts`: the product's own words to the customer about a call, per language;
  `localized`: an action's own templates (`result`, `confirm_text`) per language.
- `importing`: action files into definitions (`import_actions`).
- `sample/` and `sample_shop/`: SAMPLE DATA, actions and the order API they call.
"""
