"""Admin for the desk's data, including transcript review: filters for what went wrong
(thumbs down, fallback answers, handoffs), search in message text, and exports.

Transcripts (conversations, messages, customers' ratings) are read-only here: staff act on a
conversation from the agent console, whose services send the events live views wait for and
clear the recent-turn cache, which an admin form would not. What admin does change is on
record: Django's LogEntry rows, listed by `LogEntryAdmin`.

Django's autodiscovery imports this package, and the package imports its modules, each of which
registers its ModelAdmins:

- `transcripts`: conversations, messages and customers' ratings (read-only), with the exports;
- `configuration`: sites, bot profiles and fallback rules;
- `api_access`: API keys (the secret shown once) and API sessions;
- `change_log`: admin's own record of changes (LogEntry);
- `actions`: the actions the bot may call on the company's back end, and their calls
  (read-only);
- beside them, `view_only` (pages that change nothing), `filters` (the transcript filters) and
  `downloads` (exports streamed as files); and the help centre's admin, in `chat.knowledge`.
"""

import chat.knowledge.admin  # noqa: F401  (registers the knowledge base's admin)
from chat.admin import actions, api_access, change_log, configuration, transcripts  # noqa: F401
