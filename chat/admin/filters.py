"""Filters of the transcript review: what went wrong (thumbs down, fallback answers, handoffs,
the product's guards) and where the help centre had nothing to say."""

from django.contrib import admin
from django.db.models import Exists, OuterRef, Q

from chat import guards
from chat.models import Conversation, Feedback, Message


class RatingFilter(admin.SimpleListFilter):
    """Thumbs up/down on any answer of the conversation, or the end-of-chat CSAT score."""

    title = "rating"
    parameter_name = "rating"
    _CSAT = {f"csat{score}": score for score in range(1, 6)}

    def lookups(self, request, model_admin):
        return [
            (Feedback.Rating.DOWN, "Has thumbs down"),
            (Feedback.Rating.UP, "Has thumbs up"),
            *((value, f"CSAT {score}") for value, score in self._CSAT.items()),
            ("csat-none", "No CSAT"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value in Feedback.Rating.values:
            # EXISTS rather than a join on messages__feedback__rating: a conversation with
            # two thumbs down is still listed once.
            rated = Feedback.objects.filter(message__conversation=OuterRef("pk"), rating=value)
            return queryset.filter(Exists(rated))
        if value in self._CSAT:
            return queryset.filter(csat_score=self._CSAT[value])
        if value == "csat-none":
            return queryset.filter(csat_score__isnull=True)
        return None


class YesNoFilter(admin.SimpleListFilter):
    """A yes/no filter over `condition`, a Q object on the conversation."""

    def condition(self) -> Q:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.exclude(self.condition())
        return None


class FallbackFilter(YesNoFilter):
    title = "fallback used"
    parameter_name = "fallback"

    def condition(self) -> Q:
        return Q(Exists(Message.objects.filter(conversation=OuterRef("pk"), is_fallback=True)))


class GuardFilter(admin.SimpleListFilter):
    """Answers (or conversations with an answer) that one of the product's guards shaped:
    where the model broke a rule, or the help centre had nothing (chat/guards.py)."""

    title = "guard"
    parameter_name = "guard"

    def lookups(self, request, model_admin):
        return [(name, name.replace("_", " ")) for name in guards.ALL]

    def queryset(self, request, queryset):
        name = self.value()
        if name not in guards.ALL:
            return None
        # Names are comma-separated and none is part of another: a substring match is exact.
        if queryset.model is Message:
            return queryset.filter(guards__contains=name)
        return queryset.filter(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), guards__contains=name))
        )


class HandoffFilter(YesNoFilter):
    title = "handed off"
    parameter_name = "handoff"

    def condition(self) -> Q:
        # A conversation handed back to the bot keeps handoff_requested_at; one an agent
        # took over directly may not have it, but its status tells.
        return Q(handoff_requested_at__isnull=False) | Q(
            status__in=[Conversation.Status.WAITING, Conversation.Status.HUMAN]
        )


class SourcesFilter(admin.SimpleListFilter):
    """Bot answers with or without help-centre sources: those without are where the knowledge
    base has a gap (or the model answered from general knowledge)."""

    title = "help-centre sources"
    parameter_name = "sources"

    def lookups(self, request, model_admin):
        return [("yes", "Answers with sources"), ("no", "Answers without sources")]

    def queryset(self, request, queryset):
        answers = queryset.filter(role=Message.Role.BOT, is_fallback=False)
        if self.value() == "yes":
            return answers.exclude(sources=[])
        if self.value() == "no":
            return answers.filter(sources=[])
        return queryset
