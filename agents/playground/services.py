"""Writes of the playground: a pane's conversation opened (or set to the pane's profile and
locale), what an answer was asked with, and a pane's settings saved as a bot profile. Each is
one transaction."""

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from chat import services as chat_services
from chat.models import BotProfile, Conversation


class SaveRefused(Exception):
    """The settings cannot be saved as asked (no permission, nothing to change)."""


def playground_open(
    *,
    user: AbstractBaseUser,
    conversation: Conversation | None,
    profile: BotProfile,
    language: str,
    region: str,
    timezone_name: str,
) -> Conversation:
    """`conversation` (from `selectors.own_conversation`) set to the pane's profile and
    locale, or a new playground conversation of `user`'s with them. Its profile is what
    answers are clamped to; its locale fills the system prompt's variables."""
    with transaction.atomic():
        if conversation is None:
            # The customer token is dropped: nobody resumes a playground conversation.
            conversation, _token = chat_services.conversation_start(
                language=language,
                region=region,
                timezone_name=timezone_name,
                channel=Conversation.Channel.PLAYGROUND,
                metadata={
                    "playground": {"staff_id": user.pk, "staff": user.get_username(), "answers": {}}
                },
            )
        wanted = {
            "bot_profile_id": profile.pk,
            "language": language,
            "region": region,
            "timezone": timezone_name,
        }
        changes = {
            name: value for name, value in wanted.items() if getattr(conversation, name) != value
        }
        if changes:
            Conversation.objects.filter(pk=conversation.pk).update(
                **changes, updated_at=timezone.now()
            )
            for name, value in changes.items():
                setattr(conversation, name, value)
    return conversation


def answer_settings_record(*, conversation_id, question_id: int, answer_settings: dict) -> None:
    """Remember what the answer to `question_id` was asked with (Message has no place for
    sampling; the export reads it back from here)."""
    with transaction.atomic():
        metadata = (
            Conversation.objects.select_for_update()
            .values_list("metadata", flat=True)
            .get(pk=conversation_id)
        )
        playground = metadata.setdefault("playground", {})
        playground.setdefault("answers", {})[str(question_id)] = answer_settings
        Conversation.objects.filter(pk=conversation_id).update(metadata=metadata)


def profile_save(
    *, user: AbstractBaseUser, source: BotProfile, values: dict, new_name: str = ""
) -> tuple[BotProfile, bool]:
    """Store `values` (forms.PROFILE_FIELDS) into `source`, or into a new profile named
    `new_name` that starts from `source`'s other fields; the built-in default, never stored
    yet, is stored as the default profile. Returns (profile, created), recorded in admin
    history as `user`'s. Raises SaveRefused, or ValidationError for what the model refuses."""
    creating = bool(new_name) or source.pk is None
    # The same permissions admin asks for: a staff member who may not edit profiles there
    # may not edit them here either.
    if not user.has_perm("chat.add_botprofile" if creating else "chat.change_botprofile"):
        raise SaveRefused(
            "You do not have permission to "
            + ("add bot profiles." if creating else "change bot profiles.")
        )
    with transaction.atomic():
        if creating:
            profile = BotProfile(
                name=new_name or source.name,
                site_name=source.site_name,
                fullwidth_punctuation=source.fullwidth_punctuation,
                is_default=not new_name,
            )
            changed = list(values)
        else:
            profile = BotProfile.objects.select_for_update().get(pk=source.pk)
            changed = [name for name, value in values.items() if getattr(profile, name) != value]
            if not changed:
                raise SaveRefused(f"“{profile.name}” already has these settings.")
        for name, value in values.items():
            setattr(profile, name, value)
        profile.full_clean()
        profile.save()
        labels = [str(BotProfile._meta.get_field(name).verbose_name) for name in changed]
        LogEntry.objects.log_actions(
            user_id=user.pk,
            queryset=[profile],
            action_flag=ADDITION if creating else CHANGE,
            change_message=f"{'Added' if creating else 'Changed'} {', '.join(labels)} from "
            "the staff playground.",
            single_object=True,
        )
    return profile, creating
