from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "Channels"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The desk's services announce the bot's and the agents' messages through chat.hooks;
        # the channels' outbox listens, so neither chat nor agents imports this app.
        from chat.hooks import desk_event
        from connectors.services import on_desk_event

        desk_event.connect(on_desk_event, dispatch_uid="connectors.outbox")
