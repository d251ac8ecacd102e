"""A scripted stand-in for one vLLM OpenAI server, for the remote engine's unit tests: just
enough HTTP/1.1 to answer `GET /health` and stream `POST /v1/completions` as vLLM does (SSE,
usage on every event, `[DONE]`), and to hold a stream open, fail it mid-answer or refuse it.
The end-to-end tests (tests/e2e/test_remote_vllm.py) drive vLLM's own server."""

import asyncio
import contextlib
import json
from dataclasses import dataclass, field


@dataclass
class FakeOpenAIServer:
    words: tuple[str, ...] = ("Hello", " there", ",", " friend", ".")
    healthy: bool = True
    # "answer": the whole stream; "hold": the first word, then wait for `release`; "die": two
    # words, then the connection is cut (a killed server); "hang_up": cut before any answer;
    # "refuse": HTTP 400.
    mode: str = "answer"
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    streaming: int = 0  # streams open now
    disconnects: int = 0  # streams whose client went away before their end
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> "FakeOpenAIServer":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._server.close()
        # Cut every open connection too, as a dead process's would be.
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        finally:
            self._writers.discard(writer)
            writer.close()  # after what was written has gone out

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if method == "GET" and path == "/health":
                    status = 200 if self.healthy else 503
                    writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n".encode())
                    await writer.drain()
                    continue
                self.bodies.append(json.loads(body))
                self.headers.append(headers)
                await self._completion(reader, writer, self.bodies[-1])
                return

    async def _completion(self, reader, writer, body: dict) -> None:
        if self.mode == "hang_up":
            writer.transport.abort()
            return
        if self.mode == "refuse":
            payload = b'{"error": {"message": "bad"}}'
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        prompt_tokens = len(body["prompt"])
        self.streaming += 1
        try:
            for index, word in enumerate(self.words):
                last = index == len(self.words) - 1
                choice = {"index": 0, "text": word, "finish_reason": "stop" if last else None}
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": index + 1}
                await self._event(writer, {"choices": [choice], "usage": usage})
                if self.mode == "die" and index == 1:
                    writer.transport.abort()
                    return
                if self.mode == "hold" and index == 0:
                    if await self._client_left_before(reader, self.release.wait()):
                        self.disconnects += 1
                        return
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(self.words)}
            await self._event(writer, {"choices": [], "usage": usage})
            await self._send(writer, b"data: [DONE]\n\n")
            await self._send(writer, b"")  # the chunked body's end
        finally:
            self.streaming -= 1

    async def _client_left_before(self, reader, awaitable) -> bool:
        """Wait for `awaitable`; True if the client closed its connection first."""
        left = asyncio.ensure_future(reader.read(1))
        waited = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait({left, waited}, return_when=asyncio.FIRST_COMPLETED)
        for task in (left, waited):
            task.cancel()
        return left in done

    async def _event(self, writer, event: dict) -> None:
        await self._send(writer, f"data: {json.dumps(event)}\n\n".encode())

    async def _send(self, writer, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
