"""Clients and readers for the APIs under test: an API key's client on Django's async test
client, the chat API's and the OpenAI-compatible endpoint's requests, and SSE bodies."""

import json

from asgiref.sync import sync_to_async
from django.test import AsyncClient

from chat.api.keys import create_api_key
from chat.api.openai import model_name
from chat.models import ApiScope


class KeyClient:
    """Django's async client, sending an API key with every request."""

    def __init__(self, secret: str):
        self.client = AsyncClient()
        self.auth = {"Authorization": f"Bearer {secret}"}

    async def get(self, path: str, headers: dict | None = None):
        return await self.client.get(path, headers={**self.auth, **(headers or {})})

    async def post(self, path: str, body=None, headers: dict | None = None):
        data = body if isinstance(body, str) else json.dumps(body) if body is not None else ""
        return await self.client.post(
            path, data, content_type="application/json", headers={**self.auth, **(headers or {})}
        )


async def make_client(scopes=(ApiScope.CHAT,)) -> KeyClient:
    _key, secret = await sync_to_async(create_api_key)(name="test", scopes=list(scopes))
    return KeyClient(secret)


async def chat(client: KeyClient, **body):
    return await client.post("/api/v1/chat", body)


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def read_stream(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


async def complete(client, **body):
    return await client.post("/v1/chat/completions", {"model": model_name(), **body})
