"""The company's own knowledge: help-centre articles, split into passages, and BM25 retrieval
over them so answers can be grounded in what the company actually says.

- `models`: Article (Markdown, one language, one site or all) and Passage (one section of it).
- `services` / `selectors`: writes and reads; every write bumps the knowledge version.
- `segment`: the tokenizer (English stemming and stop words, Chinese word segmentation).
- `retrieval`: the per-process index and `search()` / `search_sync()`, the API callers use.
- `importing`: Markdown and CSV files into articles (`manage.py import_knowledge`).
"""
