from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agent console"

    def ready(self) -> None:
        # chat's hand-off opens tickets and asks who is online through this: chat never
        # imports agents (imports run agents → chat → inference_worker).
        from agents.services import STAFF_SIDE
        from chat.handoff import connect_staff_side

        connect_staff_side(STAFF_SIDE)
