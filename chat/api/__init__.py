"""The API gateway: company back ends reach the desk over HTTP.

- `/api/v1/` (`chat.api.v1`): the desk's own chat API: sessions by the caller's id, answers
  whole or streamed as Server-Sent Events, history, ratings, hand-off, and a session's events.
- `/v1/` (`chat.api.openai`): an OpenAI-compatible chat-completions endpoint, so the official
  clients work unchanged with `base_url=<desk>/v1`.

Both authenticate with API keys (`chat.api.auth`), limit per key and per client address
(`chat.api.ratelimit`), and answer through exactly the code the customer's socket uses
(`chat.answering`), so stored messages, memory, prompts, deadlines, fallback rules and a human
holding the conversation behave the same on every channel.
"""
