"""The worker's own Prometheus metrics, served beside vLLM's vllm:* metrics on one port."""

from prometheus_client import Counter, Gauge, Histogram

READY = Gauge("cs_worker_ready", "1 once the engine is loaded and requests are taken")
ACTIVE = Gauge("cs_worker_active_requests", "Requests this worker is generating now")
REQUESTS = Counter(
    "cs_worker_requests_total",
    "Requests handled, by outcome",
    # done, cancelled, expired, overflow, bad_request, error, shutdown, overloaded (the
    # consumer's channel stayed full), redis_lost (Redis failed under a running answer),
    # duplicate (a request delivered twice, after a Redis failure; dropped)
    ["outcome"],
)
COMPLETION_TOKENS = Counter("cs_worker_completion_tokens_total", "Tokens generated")
PROMPT_TOKENS = Counter("cs_worker_prompt_tokens_total", "Prompt tokens after trimming")
TRIMMED_TURNS = Counter("cs_worker_trimmed_turns_total", "History turns cut to fit the budget")
TTFT = Histogram(
    "cs_worker_time_to_first_token_seconds",
    "From taking a request to its first delta",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
DURATION = Histogram(
    "cs_worker_request_seconds",
    "From taking a request to its end",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160),
)
QUEUE_WAIT = Histogram(
    "cs_worker_queue_wait_seconds",
    "From the consumer sending a request to a worker taking it (clocks of two machines)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
QUEUE_LENGTH = Gauge(
    "cs_worker_queue_length", "Requests waiting in the shared channel, read at each heartbeat"
)
KEEPALIVES = Counter(
    "cs_worker_keepalives_total", "Keepalives sent to requests that had nothing else to send"
)
REDIS_UP = Gauge("cs_worker_redis_up", "1 while the worker's last heartbeat reached Redis")
REDIS_OUTAGES = Counter(
    "cs_worker_redis_outages_total", "Times a worker loop lost Redis and began retrying"
)
GUARD_STOPS = Counter(
    "cs_worker_guard_stops_total",
    "Answers a text guard stopped in the engine and cut back, by reason",
    # repetition (a loop), length (past the answer limit, or the token limit, cut back to a
    # sentence boundary)
    ["reason"],
)
TOOL_CALL_ANSWERS = Counter(
    "cs_worker_tool_call_answers_total",
    "Answers with functions offered that the model wrote as tool calls, by outcome",
    # called (valid calls, sent as tool_calls); malformed, unknown_function,
    # arguments_not_object (no valid call: the output was sent as text)
    ["outcome"],
)
REMOTE_SERVERS_UP = Gauge(
    "cs_worker_remote_servers_up",
    "Remote vLLM servers (INFERENCE_BACKEND=remote) not marked down: 0 means every answer "
    "gets the fallback",
)
