from django.apps import AppConfig


class WeComConfig(AppConfig):
    """WeCom's own records (the sync cursor, each customer's reply window); the kind itself
    is registered in connectors/kinds.py."""

    name = "connectors.wecom"
    label = "wecom"
    verbose_name = "WeCom customer service"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A hand-off on the desk of an inbox whose handover is "wecom" is carried out by the
        # connectors process (handover.py); the hand-off only leaves a row for it.
        from chat.hooks import desk_event
        from connectors.wecom.handover import on_desk_event

        desk_event.connect(on_desk_event, dispatch_uid="connectors.wecom.handover")
