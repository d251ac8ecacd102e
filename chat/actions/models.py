"""Actions the bot may take against the company's back end, and the record of every call.

Imported at the end of `chat.models` so Django's app registry finds them in the `chat` app.
Writes go through `chat.actions.services`, reads through `chat.actions.selectors`.

An action is data, not code: a URL template whose host it fixes, a JSON Schema of the
arguments the model may fill, headers whose secrets are read from the environment at call time
(never stored here), and who may use it. See docs/actions.md.
"""

from django.core.exceptions import ValidationError
from django.core.validators import (
    MaxLengthValidator,
    MaxValueValidator,
    MinValueValidator,
    RegexValidator,
)
from django.db import models

from chat.actions.validation import action_problems

MIN_TIMEOUT_SECONDS = 0.5
MAX_TIMEOUT_SECONDS = 30.0


def _empty_object_schema() -> dict:
    return {"type": "object", "properties": {}, "required": []}


class Action(models.Model):
    """One call the bot may make: what it does, what it needs, where it goes, who may use it."""

    class Method(models.TextChoices):
        GET = "GET", "GET"
        POST = "POST", "POST"
        PUT = "PUT", "PUT"
        PATCH = "PATCH", "PATCH"
        DELETE = "DELETE", "DELETE"

    class Audience(models.TextChoices):
        VERIFIED = "verified", "Verified customers only"
        PUBLIC = "public", "Any customer"

    site = models.ForeignKey(
        "chat.Site",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="actions",
        help_text="Empty: offered on every site. A site's own action of the same name wins.",
    )
    # The function name the model calls: OpenAI-style tools allow letters, digits, _ and -,
    # up to 64; lower case and _ keep names readable in transcripts and metric labels.
    name = models.CharField(
        max_length=64,
        validators=[
            RegexValidator(
                r"^[a-z][a-z0-9_]*\Z",
                "Lower-case letters, digits and _, starting with a letter (e.g. order_status).",
            )
        ],
    )
    description = models.TextField(
        validators=[MaxLengthValidator(1000)],
        help_text="What it does and when to use it, written for the model.",
    )
    parameters = models.JSONField(
        default=_empty_object_schema,
        help_text='JSON Schema of the arguments, e.g. {"type": "object", "properties": '
        '{"order_id": {"type": "string"}}, "required": ["order_id"]}.',
    )
    method = models.CharField(max_length=6, choices=Method.choices, default=Method.GET)
    url = models.CharField(
        max_length=2000,
        help_text="e.g. https://shop.example.com/api/orders/{order_id}?customer={customer.id}: "
        "{parameter} from the arguments, {customer.id} from the verified customer, every value "
        "URL-encoded. Scheme, host and port are fixed here.",
    )
    headers = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"Authorization": "Bearer ${SHOP_API_TOKEN}"}: ${NAME} is read from the '
        "environment at each call. Secrets are never stored here.",
    )
    timeout_seconds = models.FloatField(
        default=5.0,
        validators=[
            MinValueValidator(MIN_TIMEOUT_SECONDS),
            MaxValueValidator(MAX_TIMEOUT_SECONDS),
        ],
        help_text="The whole call, connection to last byte.",
    )
    audience = models.CharField(
        max_length=10,
        choices=Audience.choices,
        default=Audience.VERIFIED,
        help_text="Verified: only for customers the company's site has signed in.",
    )
    confirm = models.BooleanField(
        default=False,
        help_text="Ask the customer to confirm first: on for every action that changes something.",
    )
    # Text, or a mapping of language to text (chat/actions/localized.py): the customer reads
    # the template of their conversation's language.
    confirm_text = models.JSONField(
        default=str,
        blank=True,
        help_text="What will be done, in plain words, e.g. Cancel order {order_id}? Or one per "
        'language: {"en": "Cancel order {order_id}?", "zh": "取消订单 {order_id}？"}.',
    )
    result = models.JSONField(
        default=str,
        blank=True,
        help_text="The fields shown, from the JSON answer, e.g. Order {order_id}: {status}, "
        "due {eta}. A missing field makes the answer a bad response. Or one per language: "
        '{"en": "Order {order_id}: {status}", "zh": "订单 {order_id}：{status}"}.',
    )
    triggers = models.JSONField(
        default=list,
        blank=True,
        help_text='e.g. [{"pattern": "(?i)\\\\b(A\\\\d{4})\\\\b", "parameter": "order_id"}]: a '
        "match in a customer's message picks this action and fills that parameter.",
    )
    enabled = models.BooleanField(default=True)
    is_sample = models.BooleanField(
        default=False,
        editable=False,
        help_text="Part of the shipped sample actions (import_actions --remove-sample).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            # NULL sites are distinct in a plain unique constraint: one for each case.
            models.UniqueConstraint(
                fields=["site", "name"],
                condition=models.Q(site__isnull=False),
                name="action_name_once_per_site",
            ),
            models.UniqueConstraint(
                fields=["name"],
                condition=models.Q(site__isnull=True),
                name="action_name_once_for_all_sites",
            ),
        ]

    def __str__(self) -> str:
        return self.name if self.site_id is None else f"{self.name} ({self.site})"

    def clean(self) -> None:
        problems = action_problems(self)
        if problems:
            raise ValidationError(
                {field: [ValidationError(p) for p in found] for field, found in problems.items()}
            )

    def validate_constraints(self, exclude=None) -> None:
        # Django names the constraint; say what it means.
        try:
            super().validate_constraints(exclude=exclude)
        except ValidationError as exc:
            if "action_name_once" in str(exc):
                where = "this site" if self.site_id else "all sites"
                raise ValidationError(
                    {"name": f"An action named {self.name} already exists for {where}."}
                ) from exc
            raise


class ActionCall(models.Model):
    """One call of an action in a conversation: for the transcript, and for confirming a write
    exactly once. Holds the validated arguments only: never headers or secrets."""

    class Status(models.TextChoices):
        CONFIRM_REQUIRED = "confirm_required", "Waiting for the customer to confirm"
        CONFIRMED = "confirmed", "Confirmed, being called"
        CANCELLED = "cancelled", "Cancelled by the customer"
        OK = "ok", "Done"
        ERROR = "error", "Failed (the back end said no, or could not be reached)"
        TIMEOUT = "timeout", "Timed out"
        BAD_RESPONSE = "bad_response", "Bad response"
        REFUSED = "refused", "Refused by the desk (not called)"

    class ProposedBy(models.TextChoices):
        TRIGGER = "trigger", "A trigger matched the customer's words"
        MODEL = "model", "The model proposed it (a tool call)"

    # The ends that brought no result: the customer is told so in one sentence.
    FAILED = frozenset({"error", "timeout", "bad_response", "refused"})

    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.CASCADE, related_name="action_calls"
    )
    # The message the call belongs to (the bot answer that made it), once there is one.
    message = models.ForeignKey(
        "chat.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="action_calls",
    )
    # SET_NULL and the name kept: deleting an action (or the sample) leaves transcripts whole.
    action = models.ForeignKey(
        Action, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls"
    )
    action_name = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, db_index=True)
    # Who picked the call: the product decides either way whether it is made.
    proposed_by = models.CharField(
        max_length=10, choices=ProposedBy.choices, default=ProposedBy.TRIGGER
    )
    # Why it ended as it did, in a word (chat/actions/outcome.py): "http_404", "timeout", ...
    reason = models.CharField(max_length=40, blank=True)
    # For staff: what was wrong, e.g. the arguments the schema refused. Never a secret.
    detail = models.CharField(max_length=1000, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    fields = models.JSONField(default=dict, blank=True)
    text = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["conversation", "id"])]

    def __str__(self) -> str:
        return f"{self.action_name}: {self.get_status_display()}"
