from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Customer chat"

    def ready(self) -> None:
        from chat.answering import configuration
        from chat.models import Action, BotProfile, Site

        # What answers read of these rows is cached per process (chat/answering/configuration.py).
        for model in (BotProfile, Site, Action):
            for signal in (post_save, post_delete):
                signal.connect(
                    configuration.changed, sender=model, dispatch_uid=f"configuration-{model}"
                )
