from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The desk's services announce events through chat.hooks; the outbox listens, so
        # neither chat nor agents imports this app (it sits above them both).
        from chat.hooks import desk_event
        from webhooks.services import on_desk_event

        desk_event.connect(on_desk_event, dispatch_uid="webhooks.outbox")
