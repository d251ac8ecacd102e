"""The engine behind the worker as a fleet: one or several OpenAI-compatible vLLM servers
(or a router in front of them: vLLM's production-stack router, KServe, Ray Serve LLM, llm-d).

Everything up to the prompt's token ids stays in the worker, exactly as with the in-process
engine: the model's tokenizer and chat template are loaded from the model folder (or hub id),
so the token budget, trimming and tool prompts are the same. The ids go to the server's
`/v1/completions` as the prompt (vLLM takes a list of token ids), streamed, with the same
sampling fields; a tool-constrained answer carries the same structural tag in vLLM's
`structured_outputs` field. Each SSE event becomes a `Chunk` as the local engine's outputs do.

Spreading and failure:
- a request goes to the healthy server with the fewest outstanding streams (ties in turn);
- a server that refuses a connection, or fails before its answer begins, is marked down and
  the request tries the next one (nothing reached the customer, so nothing is lost); a
  background check (`GET /health`) marks servers down and up again;
- a server that dies mid-answer raises `RemoteStreamLost` from the stream: the answer ends as
  one of a dead local engine does (an `error` to its answer run, which keeps the partial text
  and falls back), and the server is marked down until its health check passes;
- `abort` closes the request's stream; vLLM's server aborts a request whose client went away.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import httpx

from inference_worker import chat_prompt, metrics
from inference_worker.coalesce import Chunk
from inference_worker.protocol import ChatTurn, Sampling, Tool
from inference_worker.tool_choice import ToolUse

log = logging.getLogger(__name__)

# Sampling the in-process engine leaves at vLLM's neutral values. A server would otherwise
# fill them from the model's generation_config.json (Qwen3's asks for top_k 20), and the same
# request would sample differently locally and remotely.
_NEUTRAL_SAMPLING = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0}


class RemoteEngineError(Exception):
    """A remote answer could not be had; the answer ends with an engine error (fallback)."""


class NoRemoteServer(RemoteEngineError):
    """Every configured server is down (failed a connect or its health check)."""


class RemoteStreamLost(RemoteEngineError):
    """The server's stream broke before the answer's end: the server died or went away."""


class RemoteRequestRefused(RemoteEngineError):
    """The server answered the request with an HTTP error, or an error inside its stream."""


@dataclass
class RemoteServer:
    """One base URL (`http://host:port`, without `/v1`) and what the worker knows of it."""

    url: str
    up: bool = True  # until a connect or a health check fails
    outstanding: int = 0  # streams open to it now
    served: int = 0  # requests sent to it, for tests and logs
    last_error: str = ""


@dataclass
class _Open:
    server: RemoteServer
    response: httpx.Response | None = None
    aborted: bool = False
    started: float = field(default_factory=time.monotonic)


class RemoteEngine:
    """The Engine protocol (inference_worker.engines.Engine) over vLLM's OpenAI server."""

    def __init__(
        self,
        *,
        urls: Sequence[str],
        tokenizer_source: str,
        model_name: str,
        served_model: str,
        max_model_len: int,
        api_key: str = "",
        connect_timeout: float = 3.0,
        read_timeout: float = 60.0,
        health_seconds: float = 2.0,
    ):
        if not urls:
            raise ValueError("a remote engine needs at least one server URL")
        self.servers = [RemoteServer(url.rstrip("/")) for url in urls]
        self.model_name = model_name
        self.max_model_len = max_model_len
        self._tokenizer_source = tokenizer_source
        self._tokenizer = None
        # Empty: the field is left out and a vLLM server uses the one model it serves; a
        # router needs the served name to pick its backends.
        self._served_model = served_model
        self._health_seconds = health_seconds
        self._connect_timeout = connect_timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            # read: the longest silence between two events of a stream (a long prefill under
            # load included); the answer's own deadline bounds the whole answer.
            timeout=httpx.Timeout(connect_timeout, read=read_timeout),
            # One connection per running stream; the worker's slots bound how many.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )
        self._open: dict[str, _Open] = {}
        self._turn = 0  # where the tie-break between equally loaded servers starts
        self._health_task: asyncio.Task | None = None

    # --- start and stop --------------------------------------------------------------------

    async def load_tokenizer(self) -> None:
        """Load the tokenizer (and chat template) from the model folder or hub id, and start
        the health checks; called once the worker's event loop runs."""
        from transformers import AutoTokenizer

        self._tokenizer = await asyncio.to_thread(
            AutoTokenizer.from_pretrained, self._tokenizer_source
        )
        await self.check_health()
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._health_loop(), name="remote-health")
        log.info(
            "remote engine: %s on %s (%d up)",
            self.model_name,
            ", ".join(server.url for server in self.servers),
            sum(server.up for server in self.servers),
        )

    async def aclose(self) -> None:
        """Stop the health checks and close every connection."""
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
            self._health_task = None
        await self._client.aclose()

    def shutdown(self) -> None:
        # Nothing runs in this process: `aclose` (on the event loop) already let go of it all.
        pass

    # --- health ----------------------------------------------------------------------------

    async def check_health(self) -> None:
        """Ask every server's `/health` once, at the same time."""
        await asyncio.gather(*(self._check(server) for server in self.servers))
        metrics.REMOTE_SERVERS_UP.set(sum(server.up for server in self.servers))

    async def _check(self, server: RemoteServer) -> None:
        try:
            response = await self._client.get(f"{server.url}/health", timeout=self._connect_timeout)
            healthy = response.status_code == 200
            reason = f"health {response.status_code}"
        except httpx.HTTPError as exc:
            healthy, reason = False, exc.__class__.__name__
        if healthy and not server.up:
            log.info("remote server %s is up again", server.url)
            server.up = True
        elif not healthy:
            self._mark_down(server, reason)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._health_seconds)
            await self.check_health()

    def _mark_down(self, server: RemoteServer, reason: str) -> None:
        server.last_error = reason
        if server.up:
            log.warning("remote server %s is down (%s)", server.url, reason)
        server.up = False
        metrics.REMOTE_SERVERS_UP.set(sum(server.up for server in self.servers))

    def _pick(self, tried: set[int]) -> RemoteServer | None:
        """The healthy server with the fewest outstanding streams; equal ones in turn."""
        count = len(self.servers)
        order = [(self._turn + step) % count for step in range(count)]
        candidates = [i for i in order if i not in tried and self.servers[i].up]
        if not candidates:
            return None
        best = min(candidates, key=lambda i: self.servers[i].outstanding)
        self._turn = (best + 1) % count
        return self.servers[best]

    # --- the Engine protocol ---------------------------------------------------------------

    def prompt_token_ids(
        self, messages: Sequence[ChatTurn], tools: Sequence[Tool] = ()
    ) -> list[int]:
        return chat_prompt.prompt_token_ids(self._tokenizer, messages, tools)

    def request_body(
        self, prompt_token_ids: list[int], sampling: Sampling, tool_use: ToolUse | None = None
    ) -> dict:
        """What `/v1/completions` is sent for one answer."""
        body: dict = {
            "prompt": prompt_token_ids,
            "stream": True,
            # Usage on every event: the cumulative completion tokens give each chunk's count.
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            "temperature": sampling["temperature"],
            "top_p": sampling["top_p"],
            "max_tokens": sampling["max_tokens"],
            "frequency_penalty": sampling["frequency_penalty"],
            **_NEUTRAL_SAMPLING,
        }
        if self._served_model:
            body["model"] = self._served_model
        if tool_use is not None:
            from inference_worker.tool_grammar import structural_tag

            # Built here, as for the local engine: a schema no grammar can follow is the
            # request's fault (ToolRequestError, bad_request) before any server is asked.
            tag = structural_tag(tool_use)
            if tag is not None:
                body["structured_outputs"] = {"structural_tag": tag}
        return body

    async def stream(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: Sampling,
        tool_use: ToolUse | None = None,
    ) -> AsyncIterator[Chunk]:
        body = self.request_body(prompt_token_ids, sampling, tool_use)
        # vLLM names the request after this header in its logs, so the two can be matched.
        headers = {"X-Request-Id": request_id}
        tried: set[int] = set()
        while True:
            server = self._pick(tried)
            if server is None:
                raise NoRemoteServer(
                    "no remote server is up: "
                    + "; ".join(f"{s.url} ({s.last_error or 'down'})" for s in self.servers)
                )
            tried.add(self.servers.index(server))
            opened = _Open(server)
            self._open[request_id] = opened
            server.outstanding += 1
            server.served += 1
            try:
                async with self._client.stream(
                    "POST", f"{server.url}/v1/completions", json=body, headers=headers
                ) as response:
                    opened.response = response
                    if response.status_code != 200:
                        detail = (await response.aread())[:300].decode(errors="replace")
                        raise RemoteRequestRefused(
                            f"{server.url} answered {response.status_code}: {detail}"
                        )
                    async for chunk in self._chunks(response, server, len(prompt_token_ids)):
                        yield chunk
                    return
            except Exception as exc:
                if opened.aborted:
                    # Closed by abort() while a read was under way: the answer ends as asked,
                    # whatever the read made of its connection going.
                    return
                if opened.response is None and isinstance(exc, httpx.TransportError):
                    # Refused, timed out or cut before its answer began: nothing reached the
                    # customer (and the server aborts what it started), so another server
                    # may answer in its place.
                    self._mark_down(server, exc.__class__.__name__)
                    continue
                if isinstance(exc, (httpx.HTTPError, RemoteStreamLost)):
                    self._mark_down(server, exc.__class__.__name__)
                    raise RemoteStreamLost(
                        f"{server.url} stopped mid-answer ({exc.__class__.__name__})"
                    ) from exc
                raise
            finally:
                server.outstanding -= 1
                if self._open.get(request_id) is opened:
                    del self._open[request_id]

    async def _chunks(
        self, response: httpx.Response, server: RemoteServer, prompt_tokens: int
    ) -> AsyncIterator[Chunk]:
        """The server's SSE events as Chunks; the stream must end with `[DONE]`."""
        counted = 0  # completion tokens given to chunks so far
        finish_reason = None
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments
            data = line[5:].strip()
            if data == "[DONE]":
                if finish_reason is None:
                    raise RemoteStreamLost(f"{server.url} ended a stream with no finish")
                return
            event = json.loads(data)
            if "error" in event:  # vLLM reports a failure inside the stream, then ends it
                raise RemoteRequestRefused(f"{server.url}: {event['error']}")
            usage = event.get("usage") or {}
            # Cumulative completion tokens; without usage on every event the final one counts.
            tokens = max(0, usage.get("completion_tokens", counted) - counted)
            counted += tokens
            choices = event.get("choices") or []
            choice = choices[0] if choices else {}
            finish_reason = choice.get("finish_reason") or finish_reason
            text = choice.get("text") or ""
            if text or tokens or choice.get("finish_reason"):
                yield Chunk(
                    text=text,
                    token_count=tokens,
                    finish_reason=choice.get("finish_reason"),
                    prompt_tokens=usage.get("prompt_tokens", prompt_tokens),
                )
        raise RemoteStreamLost(f"{server.url} closed a stream before [DONE]")

    async def abort(self, request_id: str) -> None:
        """Close the request's stream: vLLM's server aborts a request whose client is gone."""
        opened = self._open.get(request_id)
        if opened is None or opened.response is None:
            return
        opened.aborted = True
        await opened.response.aclose()

    def running_requests(self) -> int:
        return len(self._open)


def build_remote_engine(inference: dict, *, model_source: str, model_name: str) -> RemoteEngine:
    """The remote engine the settings describe (`settings.INFERENCE`)."""
    return RemoteEngine(
        urls=inference["REMOTE_URLS"],
        tokenizer_source=model_source,
        model_name=model_name,
        served_model=inference["REMOTE_MODEL"],
        max_model_len=inference["MAX_MODEL_LEN"],
        api_key=inference["REMOTE_API_KEY"],
        connect_timeout=inference["REMOTE_CONNECT_TIMEOUT"],
        read_timeout=inference["REMOTE_READ_TIMEOUT"],
        health_seconds=inference["REMOTE_HEALTH_SECONDS"],
    )
