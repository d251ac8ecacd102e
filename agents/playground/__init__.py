"""The staff playground, /console/playground/: a support lead tries the bot with other settings
(system prompt, sampling, language, region) and compares them before making them live.

An answer here is a customer's answer. Each pane of the page is a Conversation with channel
"playground", owned by the staff member who opened it (nobody holds its customer token, so no
customer can reach it); a question goes through `chat.turns.customer_says` with the pane's
`AnswerOptions`, and the answer comes back through the channel layer and the worker as
Server-Sent Events, read by the same `AnswerListener` and written by the same `sse()` as the
chat API's stream. Deadlines, fallback and the profile's clamping are the live ones.

Modules, as the console's layers:
- `forms`: a pane's settings, checked in the ranges the answer path clamps to.
- `selectors`: reads: profiles, a staff member's own playground conversations, the system
  prompt preview, what saving would change, the session export.
- `services`: writes: a pane's conversation opened or updated, what an answer was asked with,
  settings saved as a bot profile.
- `views`: the page, its htmx partials, the streaming send and the export download.
The browser side is static/playground/src/ (built into static/playground/playground.js).
"""
