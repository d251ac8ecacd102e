"""The staff side: tickets with internal notes, and canned replies.

Internal notes are for staff only: no customer frame and no model prompt ever contains them
(they live in their own table, not among the conversation's messages).
"""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Ticket(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PENDING = "pending", "Pending"
        SOLVED = "solved", "Solved"

    class Priority(models.TextChoices):
        LOW = "low", "Low"
        NORMAL = "normal", "Normal"
        HIGH = "high", "High"
        URGENT = "urgent", "Urgent"

    subject = models.CharField(max_length=200)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True
    )
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tickets",
    )
    conversation = models.ForeignKey(
        "chat.Conversation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tickets",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    solved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject}"

    def set_status(self, status: str) -> None:
        """The status, with `solved_at` in step: set when the ticket becomes solved, kept
        while it stays solved, cleared when it reopens. (The one place for that rule: the
        console's service and admin both use it.)"""
        self.status = status
        if status == self.Status.SOLVED:
            self.solved_at = self.solved_at or timezone.now()
        else:
            self.solved_at = None


class TicketNote(models.Model):
    """An internal note on a ticket: never shown to the customer, never put into a prompt."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.text[:60]


class CannedReply(models.Model):
    """A prepared answer, inserted in the console's reply box by typing /shortcut.

    Its text may use {customer_name}, {agent_name} and {site_name}.
    """

    shortcut = models.SlugField(max_length=40, unique=True, help_text="Typed as /shortcut")
    title = models.CharField(max_length=100)
    text = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["shortcut"]
        verbose_name_plural = "canned replies"

    def __str__(self) -> str:
        return f"/{self.shortcut}"
