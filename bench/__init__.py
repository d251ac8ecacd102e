"""`make bench` (`python -m bench`): the desk's benchmark, never part of `make test`.

Two parts, each writing its figures into docs/benchmarks.md and docs/benchmarks.png:

- pipeline: ONE Daphne process under idle customer sockets and streaming conversations, the
  answers coming from a synthetic token source at the real model's delta rate, so what is
  measured is the web side (Daphne, Channels, Redis, the worker loop), not the model;
- vs_vllm: the whole stack with the real model against vLLM's own OpenAI server on the same
  model, prompts and sampling, in alternating rounds.
"""
