"""Conversations, their messages, and the bot profile that shapes the bot's answers.

The database is the source of truth: Redis only caches recent turns (see `chat.memory`).
Writes go through `chat.services`, reads through `chat.selectors`.
"""

import secrets
import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from chat.prompting import Range, SamplingDefaults, SamplingRanges
from inference_worker import protocol

_SAMPLING = SamplingDefaults()

# Tokens of the worker's context a profile's max_tokens must leave for the prompt: the rendered
# system prompt and the newest customer message are never trimmed (inference_worker/budget.py),
# so with less room than this nearly every answer overflows the context and falls back.
PROMPT_RESERVE_TOKENS = 256


def _within(allowed: Range) -> list:
    return [MinValueValidator(allowed.low), MaxValueValidator(allowed.high)]


def new_site_key() -> str:
    return "site_" + secrets.token_urlsafe(18)


class Site(models.Model):
    """A company website that embeds the widget with this site key."""

    key = models.CharField(max_length=64, unique=True, default=new_site_key)
    name = models.CharField(max_length=200, help_text="Shown in the widget's header.")
    allowed_origins = models.TextField(
        help_text="One origin per line, e.g. https://shop.example.com (scheme, host and port "
        "if not the default). Pages elsewhere cannot use this key."
    )
    greeting = models.TextField(default="Hi! How can we help you today?")
    accent_color = models.CharField(
        max_length=7, default="#2563eb", validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$")]
    )
    language = models.CharField(max_length=35, default="en", help_text="Default UI language")
    business_hours = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"timezone": "Europe/Berlin", "mon-fri": "09:00-18:00"}',
    )
    bot_profile = models.ForeignKey(
        "BotProfile", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    is_active = models.BooleanField(
        default=True,
        help_text="Off: the widget with this key and the site's API keys stop working; its "
        "transcripts are kept. A site with conversations cannot be deleted: turn this off.",
    )
    # The key the company's back end signs customer tokens with (HS256, chat/customers.py).
    # Kept as it is, unlike an API key's secret: checking an HMAC signature takes the key
    # itself. Shown once, when made (`manage.py site_identity_secret`, or admin's action), and
    # in no form, list or log; empty: the site's widget cannot verify customers.
    identity_secret = models.CharField(max_length=128, blank=True, default="", editable=False)
    identity_secret_created_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def origins(self) -> set[str]:
        return {normalize_origin(line) for line in self.allowed_origins.split() if line.strip()}

    def allows(self, origin: str) -> bool:
        return bool(origin) and normalize_origin(origin) in self.origins()


def normalize_origin(origin: str) -> str:
    """scheme://host[:port] in lower case, default ports dropped, no trailing slash."""
    parts = urlsplit(origin.strip().rstrip("/").lower())
    if not parts.scheme or not parts.hostname:
        return ""
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class Inbox(models.Model):
    """A channel of a site: a mailbox, a WeCom account. Customers who write to it get
    conversations on the desk like the widget's; what the desk says goes back the same way.

    `settings` are the kind's (connectors/kinds.py lists them). A secret in them may be written
    `${ENV_NAME}`, read from the environment where it is used (chat/env_secrets.py); one given
    literally is stored, and shown masked everywhere after it was entered.
    """

    class Kind(models.TextChoices):
        EMAIL = "email", "E-mail"
        WECOM = "wecom", "WeCom"

    class BotMode(models.TextChoices):
        ANSWER = "answer", "The bot answers"
        DRAFT = "draft", "The bot drafts; an agent sends"
        SILENT = "silent", "Every message waits for an agent"

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="inboxes")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=200)
    settings = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(
        default=True, help_text="Off: nothing is read from this channel, nor sent through it."
    )
    bot_mode = models.CharField(max_length=10, choices=BotMode.choices, default=BotMode.ANSWER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "inboxes"
        ordering = ["site_id", "pk"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


class Conversation(models.Model):
    class Status(models.TextChoices):
        BOT = "bot", "Bot answering"
        WAITING = "waiting", "Waiting for a human"
        HUMAN = "human", "Human agent"
        CLOSED = "closed", "Closed"

    class Channel(models.TextChoices):
        WIDGET = "widget", "Web chat"
        API = "api", "Chat API"
        OPENAI = "openai", "OpenAI-compatible API"
        # Staff trying the bot in the console: kept out of customer reports, CSAT and the
        # fine-tuning export.
        PLAYGROUND = "playground", "Playground"
        # A channel of the site's (an Inbox): the customer writes from their mailbox or app.
        EMAIL = "email", "E-mail"
        WECOM = "wecom", "WeCom"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Where the customer writes from: the widget's socket, or a company's back end by the API.
    channel = models.CharField(
        max_length=10, choices=Channel.choices, default=Channel.WIDGET, db_index=True
    )
    # SHA-256 of the customer's access token; the token itself is only ever sent to the
    # customer once, so a database leak does not let anyone resume a conversation.
    token_hash = models.CharField(max_length=64, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BOT)
    language = models.CharField(max_length=35, blank=True, help_text="BCP 47 tag, e.g. en, zh-CN")
    region = models.CharField(max_length=64, blank=True)
    timezone = models.CharField(max_length=64, blank=True)
    page_url = models.URLField(max_length=2000, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    bot_profile = models.ForeignKey(
        "BotProfile", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # PROTECT: deleting a site must not turn its transcripts into key-less ones (which the
    # demo page's sockets could then resume); a site is retired by deactivating it.
    site = models.ForeignKey(
        Site, null=True, blank=True, on_delete=models.PROTECT, related_name="conversations"
    )
    # The channel of the site's that carries the conversation (e-mail, WeCom); none for the
    # widget and the APIs. PROTECT for the reason `site` is: an inbox is retired by disabling it.
    inbox = models.ForeignKey(
        "Inbox", null=True, blank=True, on_delete=models.PROTECT, related_name="conversations"
    )
    # The customer's address on that channel: an e-mail address, a WeCom external_userid.
    contact = models.CharField(max_length=254, blank=True, default="")
    # The agent holding the conversation while its status is "human".
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="held_conversations",
    )
    customer_name = models.CharField(max_length=200, blank=True)
    customer_email = models.EmailField(blank=True, help_text="For a follow-up by e-mail")
    # The company's own id for the customer, once its back end vouched for who they are (a
    # signed token through the widget, or an API key with the "customers" scope; see
    # chat/customers.py). Set once: a conversation never changes customer.
    customer_id = models.CharField(max_length=200, blank=True, default="", db_index=True)
    # Until when that vouching holds (the token's `exp`); a fresh token moves it on. Past it,
    # the record stays but the conversation counts as unverified (selectors.verified_customer).
    customer_verified_until = models.DateTimeField(null=True, blank=True)
    handoff_requested_at = models.DateTimeField(null=True, blank=True)
    csat_score = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(5)],
        help_text="Customer satisfaction, 1 to 5, asked at the end of the conversation",
    )
    csat_comment = models.TextField(blank=True)
    csat_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_message_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["inbox", "contact"], name="conversation_contact")]

    def __str__(self) -> str:
        return f"{self.id} ({self.get_status_display()})"


class Message(models.Model):
    class Role(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        BOT = "bot", "Bot"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    text = models.TextField(blank=True)
    # The customer's own id for a message, so a resend after a reconnect is stored once.
    # NULL, not "", for "none": the uniqueness constraint below applies to non-NULL ids only.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    # The staff member who wrote an agent message.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # What the channel said about the message beyond its text: an e-mail's Message-ID and
    # subject, the attachments it listed (names, types, sizes; the files are not kept).
    metadata = models.JSONField(default=dict, blank=True)

    # Bot answers only.
    model_name = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first token")
    total_ms = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    is_fallback = models.BooleanField(default=False, help_text="Answered by the fallback rules")
    is_partial = models.BooleanField(default=False, help_text="The answer was cut off")
    # The product's guards that shaped this answer (chat/guards.py), comma-separated, e.g.
    # "complaint,length": what the model said is not all the customer read.
    guards = models.CharField(
        max_length=100,
        blank=True,
        default="",
        help_text="Guards that shaped the answer (chat/guards.py)",
    )
    # The messages the model saw for this answer: the rendered system prompt and the turns kept
    # within the token budget, as [{"role", "content"}, ...]. For review and fine-tuning data.
    prompt = models.JSONField(null=True, blank=True, editable=False)
    # The help-centre articles the answer was grounded in: [{"article_id", "title", "url"}].
    sources = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["conversation", "id"])]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=models.Q(client_id__isnull=False),
                name="message_client_id_once_per_conversation",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()}: {self.text[:60]}"

    @property
    def guard_list(self) -> list[str]:
        """The guards that shaped this answer, for people reading the transcript."""
        return [name.replace("_", " ") for name in self.guards.split(",") if name]

    @property
    def passages_used(self) -> list[str]:
        """The help-centre passages the model saw for this answer (from its stored prompt)."""
        if not self.sources or not self.prompt:
            return []
        return protocol.passages_in(self.prompt[0]["content"])


class Feedback(models.Model):
    """A customer's thumbs up or down on one bot answer; rating again replaces it."""

    class Rating(models.TextChoices):
        UP = "up", "Thumbs up"
        DOWN = "down", "Thumbs down"

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="feedback")
    rating = models.CharField(max_length=4, choices=Rating.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "feedback"

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on message {self.message_id}"


class BotProfile(models.Model):
    """The system prompt and sampling defaults the bot answers with, edited in admin."""

    name = models.CharField(max_length=100, unique=True)
    is_default = models.BooleanField(
        default=False, help_text="Used for conversations that name no profile (only one is)."
    )
    site_name = models.CharField(max_length=200, default="our company")
    system_prompt = models.TextField(
        help_text="Variables: {current_time}, {user_region}, {language}, {site_name}, "
        "{answer_limit}. "
        "Unknown variables are left as written."
    )
    temperature = models.FloatField(
        default=_SAMPLING.temperature, validators=_within(SamplingRanges.temperature)
    )
    top_p = models.FloatField(default=_SAMPLING.top_p, validators=_within(SamplingRanges.top_p))
    max_tokens = models.PositiveIntegerField(
        default=_SAMPLING.max_tokens, validators=_within(SamplingRanges.max_tokens)
    )
    frequency_penalty = models.FloatField(
        default=_SAMPLING.frequency_penalty,
        validators=_within(SamplingRanges.frequency_penalty),
    )
    fullwidth_punctuation = models.BooleanField(
        default=True,
        help_text="In Chinese conversations, turn the bot's half-width punctuation in prose "
        "into full-width (，。？！), leaving code, URLs and numbers alone.",
    )

    class WhenNoKnowledge(models.TextChoices):
        GENERAL = "general", "Answer generally"
        OFFER_HUMAN = "offer_human", "Say so and offer a human agent"

    when_no_knowledge = models.CharField(
        max_length=12,
        choices=WhenNoKnowledge.choices,
        default=WhenNoKnowledge.OFFER_HUMAN,
        help_text="When no help-centre article covers a question (the site has articles, none "
        "relevant): answer from the model's general knowledge, or say so and offer a human.",
    )
    # The longest answer a customer reads: the prompt asks for it, and the worker ends an
    # answer that runs past it at a sentence boundary (inference_worker/textguards.py).
    answer_max_words = models.PositiveIntegerField(
        default=_SAMPLING.answer_max_words,
        validators=[MinValueValidator(10)],
        help_text="Longest answer in words (languages written with spaces).",
    )
    answer_max_han = models.PositiveIntegerField(
        default=_SAMPLING.answer_max_han,
        validators=[MinValueValidator(15)],
        help_text="Longest answer in Chinese characters.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="one_default_profile",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        # The web processes read the same INFERENCE_MAX_MODEL_LEN as the worker (see
        # docs/operations.md): a profile that saves here fits the engine that answers it.
        context = settings.INFERENCE["MAX_MODEL_LEN"]
        limit = context - PROMPT_RESERVE_TOKENS
        if self.max_tokens is not None and self.max_tokens > limit:
            raise ValidationError(
                {
                    "max_tokens": (
                        f"{self.max_tokens} tokens leave no room for the prompt: the "
                        f"inference worker's context (INFERENCE_MAX_MODEL_LEN) is {context} "
                        f"tokens, and {PROMPT_RESERVE_TOKENS} of them are kept for the system "
                        f"prompt and the conversation. Enter at most {limit}, or raise "
                        f"INFERENCE_MAX_MODEL_LEN on the worker and the web processes."
                    )
                }
            )


class FallbackRule(models.Model):
    """An answer the desk gives when the model is slow, failing or down.

    Rules are tried by priority (lowest first); the first whose keywords appear in the
    customer's last message, in a matching language, answers. Without a match the built-in
    apology in the customer's language answers (see `chat.fallback`).
    """

    name = models.CharField(max_length=100)
    keywords = models.TextField(
        help_text="Comma-separated words or phrases, matched case-insensitively. "
        "Empty: any message."
    )
    language = models.CharField(
        max_length=35, blank=True, help_text="Language prefix such as en or zh; empty for any."
    )
    answer = models.TextField()
    priority = models.IntegerField(default=100)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name


class ApiScope(models.TextChoices):
    CHAT = "chat", "Chat API (/api/v1/chat, sessions)"
    OPENAI = "openai", "OpenAI-compatible API (/v1/chat/completions)"
    TRANSCRIPTS_READ = "transcripts:read", "Read transcripts"
    CUSTOMERS = "customers", "Name verified customers (the chat API's customer field)"


class ApiKey(models.Model):
    """A company back end's key to the API. Only a hash of the secret is stored: the secret is
    shown once, when the key is made (`manage.py create_api_key`, or admin)."""

    name = models.CharField(max_length=100)
    # The first characters of the secret, to tell keys apart in lists and logs.
    prefix = models.CharField(max_length=16, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    site = models.ForeignKey(
        Site,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="Conversations made with this key belong to this site (its bot profile, "
        "its limits). Empty: the desk's default profile.",
    )
    scopes = models.JSONField(default=list, help_text='e.g. ["chat", "openai"]')
    requests_per_minute = models.PositiveIntegerField(
        default=60, help_text="Requests a minute with this key; 0 for no limit."
    )
    tokens_per_day = models.PositiveIntegerField(
        default=200_000, help_text="Prompt and completion tokens a day; 0 for no limit."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


class ApiSession(models.Model):
    """A caller's own `session_id`, mapped to one conversation per key: two keys never share
    a session, whatever ids their callers choose."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="sessions")
    session_id = models.CharField(max_length=128)
    conversation = models.OneToOneField(
        Conversation, on_delete=models.CASCADE, related_name="api_session"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "session_id"], name="api_session_once_per_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} ({self.api_key.name})"


from chat.actions.models import Action, ActionCall  # noqa: E402,F401
from chat.knowledge.models import Article, Passage  # noqa: E402,F401
