"""Actions as the model sees them: OpenAI-style tool definitions (what vLLM's chat template
and the OpenAI API take as `tools`)."""

from chat.actions.models import Action


def tool_definitions(actions: list[Action]) -> list[dict]:
    """`{"type": "function", "function": {"name", "description", "parameters"}}` per action.
    Only what the model needs to propose a call: never the URL, headers or audience, and the
    customer's id is no parameter (the product adds it)."""
    return [
        {
            "type": "function",
            "function": {
                "name": action.name,
                "description": action.description,
                "parameters": action.parameters,
            },
        }
        for action in actions
    ]
