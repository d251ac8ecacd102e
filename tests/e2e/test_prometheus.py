"""Debian's Prometheus scraping the real stack with deploy/prometheus.yml, and every query of the
Grafana dashboard (deploy/grafana/dashboards/desk.json) answered with data.

The real stack (vLLM worker with the real model, Daphne, Redis) is the only one whose worker
serves vLLM's vllm:* series; a second Daphne (`synthetic_daphne`) lets in nobody but the bearer
token, so the scrape of it shows that Prometheus authenticates to /metrics as the deploy file
says. After a little traffic (answers, a thumbs up, a CSAT score, a hand-off) every dashboard
expression goes through Prometheus' HTTP API: one that is invalid, or that returns no series,
fails the test with its panel named.

Timing: the dashboard's rate() and increase() windows are 5m and 1h. A window needs two
samples of a series to give a value; at this test's 1 s scrape interval those exist 2 s after
the first scrape, so a window of any length works as soon as Prometheus has scraped twice.
Rather than sleep a fixed time, each query is polled until it returns a series (at most
QUERY_DEADLINE), and the traffic is sent only once every target has been scraped, so that
its increase falls inside what Prometheus saw.
"""

import asyncio
import io
import json
import math
import os
import secrets
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import websockets
import yaml

from devstack.stack import ReadyCheck, Supervisor, wait_ready
from inference_worker.synthetic import SyntheticEngine
from tests.e2e.conftest import ROOT, frames_until, free_port, synthetic_daphne

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CONFIG = ROOT / "deploy" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "desk.json"
PROMETHEUS_PATHS = ("/usr/bin/prometheus",)  # Debian's package
WEB_JOB, WORKER_JOB = "desk-web", "desk-worker"
SCRAPE_INTERVAL = "1s"
TARGETS_DEADLINE = 60  # s, for every target's first successful scrape
QUERY_DEADLINE = 60  # s, for the traffic's last counts to be scraped and every query answered


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or next(
        (p for p in PROMETHEUS_PATHS if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail("Debian's prometheus is not installed: run `bash scripts/system-deps.sh`")
    return found


def host_port(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of every panel, rows' panels included."""
    found = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            found.extend(
                (panel["title"], target["expr"])
                for target in panel.get("targets", [])
                if target.get("expr")
            )
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def render_config(run_dir: Path, *, web: list[str], workers: list[str], token: str) -> Path:
    """deploy/prometheus.yml with the test's targets, token file and a 1 s interval; every
    other line (jobs, paths, the bearer authorization) as shipped."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL,
        scrape_timeout=SCRAPE_INTERVAL,
        evaluation_interval=SCRAPE_INTERVAL,
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {WEB_JOB, WORKER_JOB}, f"jobs of {CONFIG} changed: {sorted(jobs)}"
    token_file = run_dir / "desk-metrics-token"
    token_file.write_text(token + "\n")  # as `openssl rand -hex 32 > file` writes it
    token_file.chmod(0o600)
    jobs[WEB_JOB]["authorization"]["credentials_file"] = str(token_file)
    jobs[WEB_JOB]["static_configs"] = [{"targets": web}]
    jobs[WORKER_JOB]["static_configs"] = [{"targets": workers}]
    path = run_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    promtool = shutil.which("promtool")
    if promtool is not None:  # the same package ships it
        checked = subprocess.run(
            [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, (
            f"promtool refused the config:\n{checked.stdout}{checked.stderr}"
        )
    return path


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def api(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422 carry the error in the same shape
            return json.load(exc)

    def query(self, expr: str) -> dict:
        return self.api("/api/v1/query", query=expr)

    def value(self, expr: str) -> float | None:
        """A query that returns one series: its value; None for no series."""
        result = self.query(expr)
        assert result["status"] == "success", f"{expr}: {result.get('error')}"
        series = result["data"]["result"]
        return float(series[0]["value"][1]) if series else None

    def targets(self) -> list[dict]:
        return self.api("/api/v1/targets")["data"]["activeTargets"]


@pytest.fixture(scope="module")
def token_only_web(django_db_setup, django_db_blocker, tmp_path_factory):
    """A Daphne whose /metrics lets in only the bearer token: no network is allowed."""
    token = secrets.token_hex(32)
    with synthetic_daphne(
        "metrics-token",
        SyntheticEngine(tokens_per_second=400),
        tmp_path_factory,
        django_db_blocker,
        METRICS_ALLOWED_NETWORKS="192.0.2.0/24",  # TEST-NET: nobody here
        METRICS_BEARER_TOKEN=token,
    ) as stack:
        yield stack, token


@pytest.fixture(scope="module")
def prometheus(real_stack, token_only_web, tmp_path_factory):
    binary = prometheus_binary()
    web, token = token_only_web
    run_dir = tmp_path_factory.mktemp("prometheus")
    config = render_config(
        run_dir,
        web=[host_port(real_stack.http), host_port(web.http)],
        workers=[host_port(real_stack.metrics_url)],
        token=token,
    )
    port, output = free_port(), io.StringIO()
    sup = Supervisor(out=output, stop_timeout=10)
    sup.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={run_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=run_dir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(sup, [ReadyCheck("prometheus", f"{url}/-/ready")], threading.Event(), timeout=60)
    except RuntimeError as exc:
        sup.stop_all()
        pytest.fail(f"prometheus did not start: {exc}\n{output.getvalue()[-5000:]}")
    yield Prometheus(url)
    sup.stop_all()


async def wait_for(check, timeout: float, every: float = 0.5):
    """The first truthy value of check() within timeout, else the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(every)


async def open_chat(stack):
    ws = await websockets.connect(
        f"{stack.ws}/ws/chat/?lang=en", origin=stack.origin, open_timeout=10
    )
    return ws, json.loads(await ws.recv())


async def ask(ws, text: str, client_id: str) -> dict:
    await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
    return (await frames_until(ws, "bot.done"))[-1]


async def traffic(stack) -> None:
    """Three model answers, a thumbs up, a CSAT of 5 and a hand-off."""
    ws, _ = await open_chat(stack)
    done = await ask(ws, "Hello, where is my order?", "q1")
    assert done["fallback"] is False, done
    await ask(ws, "And how long does shipping take?", "q2")
    await ws.send(
        json.dumps({"type": "feedback", "message_id": done["message_id"], "rating": "up"})
    )
    await frames_until(ws, "feedback.ack", timeout=10)
    await ws.send(json.dumps({"type": "csat", "score": 5}))
    await frames_until(ws, "csat.ack", timeout=10)
    await ws.close()

    ws, _ = await open_chat(stack)
    await ask(ws, "Can I change my delivery address?", "q1")
    await ws.send(json.dumps({"type": "handoff.request"}))
    await frames_until(ws, "handoff.ack", timeout=10)
    await ws.close()


async def test_every_dashboard_query_returns_series_from_the_real_stack(
    real_stack, token_only_web, prometheus, short_answers
):
    queries = dashboard_queries()
    assert len(queries) >= 20, "the dashboard lost its panels?"

    # 1. Every target scraped: the real Daphne by address (loopback), the token-only one by
    # the bearer token of the config, the worker's port as it is.
    def all_up():
        targets = prometheus.targets()
        return len(targets) == 3 and all(t["health"] == "up" for t in targets)

    if not await wait_for(all_up, TARGETS_DEADLINE):
        pytest.fail(
            "targets not up: "
            + json.dumps(
                [(t["scrapeUrl"], t["health"], t["lastError"]) for t in prometheus.targets()]
            )
        )
    web, _token = token_only_web
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, f"{web.http}/metrics", timeout=10)
    assert refused.value.code == 403  # without the token, from loopback: not allowed

    # 2. Traffic, then its counts as Prometheus scraped them.
    await traffic(real_stack)
    expected = {
        'sum(cs_chat_answers_total{outcome="model"})': 3,
        'sum(cs_chat_feedback_total{rating="up"})': 1,
        'sum(cs_chat_csat_total{score="5"})': 1,
        "sum(cs_chat_handoffs_total)": 1,
    }

    def counted() -> bool:
        return all((prometheus.value(expr) or 0) >= least for expr, least in expected.items())

    if not await wait_for(counted, QUERY_DEADLINE):
        pytest.fail(
            "the traffic was not counted: "
            + json.dumps({expr: prometheus.value(expr) for expr in expected})
        )

    # 3. Every expression of the dashboard: valid, and at least one series. Polled together
    # under one deadline: a window needs its second sample after the traffic's counts.
    pending, errors = list(queries), []

    def answer_pending() -> bool:
        for title, expr in list(pending):
            result = prometheus.query(expr)
            if result["status"] != "success":
                errors.append(f"{title}: {expr}: {result.get('error')}")
            elif not result["data"]["result"]:
                continue
            pending.remove((title, expr))
        return not pending

    await wait_for(answer_pending, QUERY_DEADLINE)
    assert not errors, "invalid PromQL in the dashboard:\n" + "\n".join(errors)
    assert not pending, "dashboard queries without series:\n" + "\n".join(
        f"{title}: {expr}" for title, expr in pending
    )

    # 4. A few values the traffic must show.
    values = {expr: prometheus.value(expr) for _title, expr in queries}
    first_token_p50 = next(
        v
        for e, v in values.items()
        if e.startswith(
            "histogram_quantile(0.5, sum by (le) (rate(cs_chat_time_to_first_token_seconds"
        )
    )
    assert first_token_p50 is not None and math.isfinite(first_token_p50) and first_token_p50 > 0
    assert values["sum(rate(vllm:generation_tokens_total[5m]))"] > 0
    assert 0 <= values["max by (instance) (vllm:kv_cache_usage_perc)"] <= 1
    assert values["sum(cs_worker_ready)"] >= 1
    assert values['sum(up{job="desk-web"})'] == 2
    csat = next(v for e, v in values.items() if e.startswith("(1 * sum(increase(cs_chat_csat"))
    assert csat == pytest.approx(5)
    thumbs_up_share = next(
        v
        for e, v in values.items()
        if e.startswith('sum(increase(cs_chat_feedback_total{rating="up"}')
    )
    assert thumbs_up_share == pytest.approx(1)
