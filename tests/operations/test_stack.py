"""The `make run` supervisor, driven with dummy commands instead of the product's own."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import (
    PROJECT_ROOT,
    WORKER_READY_PATTERN,
    Backoff,
    Command,
    Config,
    Plan,
    Port,
    ReadyCheck,
    Supervisor,
    child_env,
    describe_exit,
    live_group_members,
    product_plan,
    run_stack,
    url_host,
)
from tests.processes import pid_alive

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(60)"]


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} not written within {timeout} s")


def parent_of_grandchild(pid_file: Path, *, ignore_term: bool = False) -> list[str]:
    """A child that starts a grandchild in its own group and writes both pids to pid_file."""
    code = textwrap.dedent(f"""\
        import os, signal, subprocess, sys, time
        if {ignore_term}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open({str(pid_file)!r}, "w") as f:
            f.write(f"{{os.getpid()}} {{grandchild.pid}}\\n")
        time.sleep(60)
    """)
    return [PY, "-c", code]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sup() -> Iterator[Supervisor]:
    supervisor = Supervisor(stop_timeout=5, out=io.StringIO())
    yield supervisor
    supervisor.stop_all()


def output(supervisor: Supervisor) -> str:
    assert isinstance(supervisor.out, io.StringIO)
    return supervisor.out.getvalue()


# --- Supervisor -------------------------------------------------------------------------------


def test_stop_all_leaves_no_process_of_any_group(sup: Supervisor, tmp_path: Path) -> None:
    plain = sup.start("plain", SLEEPER)
    pid_file = tmp_path / "pids"
    sup.start("parent", parent_of_grandchild(pid_file))
    parent, grandchild = map(int, wait_for_file(pid_file).split())
    assert set(live_group_members(parent)) == {parent, grandchild}

    sup.stop_all()

    for pid in (plain.pid, parent, grandchild):
        assert not pid_alive(pid)
    assert sup.children == []
    # Stopped in reverse start order.
    assert output(sup).index("stopping parent") < output(sup).index("stopping plain")
    sup.stop_all()  # idempotent


def test_a_group_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    supervisor = Supervisor(stop_timeout=0.5, out=io.StringIO())
    pid_file = tmp_path / "pids"
    supervisor.start("stubborn", parent_of_grandchild(pid_file, ignore_term=True))
    parent, grandchild = map(int, wait_for_file(pid_file).split())

    supervisor.stop_all()

    assert not pid_alive(parent) and not pid_alive(grandchild)
    assert "killing it" in output(supervisor)
    assert "stubborn stopped (killed by SIGKILL)" in output(supervisor)


def test_supervise_names_a_child_that_exited(sup: Supervisor) -> None:
    sup.start("steady", SLEEPER)
    sup.start("quitter", [PY, "-c", "import sys, time; time.sleep(0.3); sys.exit(3)"])

    child = sup.supervise(timeout=10)

    assert child is not None
    assert (child.name, child.returncode) == ("quitter", 3)
    assert describe_exit(child.returncode) == "exit code 3"


def test_supervise_returns_none_on_stop_or_timeout(sup: Supervisor) -> None:
    sup.start("steady", SLEEPER)
    assert sup.supervise(timeout=0.2) is None
    stop = threading.Event()
    stop.set()
    assert sup.supervise(stop) is None


def test_output_is_prefixed_with_the_childs_name(sup: Supervisor) -> None:
    child = sup.start("talker", [PY, "-c", "print('hello'); print('10%\\r100%')"])
    assert sup.supervise(timeout=10) is child
    assert "talker | hello\n" in output(sup)
    assert "talker | 100%\n" in output(sup)  # a redrawn progress line shows its final state


def test_run_returns_the_exit_code(sup: Supervisor) -> None:
    assert sup.run("ok", [PY, "-c", "pass"]) == 0
    assert sup.run("bad", [PY, "-c", "raise SystemExit(2)"]) == 2
    assert sup.children == []


def test_run_stops_its_command_when_asked(sup: Supervisor, tmp_path: Path) -> None:
    stop = threading.Event()
    pid_file = tmp_path / "pids"
    threading.Thread(target=lambda: (wait_for_file(pid_file), stop.set()), daemon=True).start()

    assert sup.run("slow", parent_of_grandchild(pid_file), stop=stop) is None

    assert not any(pid_alive(int(pid)) for pid in pid_file.read_text().split())


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-signal.SIGTERM) == "killed by SIGTERM"
    assert describe_exit(None) == "still running"


# --- run_stack with dummy plans ---------------------------------------------------------------


def test_a_failing_step_stops_startup(tmp_path: Path) -> None:
    supervisor = Supervisor(out=io.StringIO())
    plan = Plan(
        steps=[Command("migrate", [PY, "-c", "raise SystemExit(2)"])],
        services=[Command("never", SLEEPER)],
    )

    code = run_stack(Config(var_dir=tmp_path), plan, threading.Event(), supervisor)

    assert code == 1
    assert "migrate failed (exit code 2)" in output(supervisor)
    assert "never" not in output(supervisor)
    pid = int(re.findall(r"started Redis \(pid (\d+)\)", output(supervisor))[0])
    assert not pid_alive(pid)


def test_a_busy_port_says_which_and_how_to_change_it(tmp_path: Path) -> None:
    supervisor = Supervisor(out=io.StringIO())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        plan = Plan(steps=[], services=[], ports=[Port("127.0.0.1", port, "PORT")])

        code = run_stack(Config(var_dir=tmp_path), plan, threading.Event(), supervisor)

    assert code == 1
    assert f"127.0.0.1:{port}" in output(supervisor)
    assert f"PORT={port + 1} make run" in output(supervisor)
    assert "started Redis" not in output(supervisor)


def test_a_service_exiting_on_its_own_stops_the_rest(tmp_path: Path) -> None:
    supervisor = Supervisor(out=io.StringIO())
    plan = Plan(
        steps=[],
        services=[
            Command("steady", SLEEPER),
            Command("crasher", [PY, "-c", "import time; time.sleep(0.5); raise SystemExit(4)"]),
        ],
    )

    code = run_stack(Config(var_dir=tmp_path), plan, threading.Event(), supervisor)

    assert code == 1
    assert "crasher exited on its own (exit code 4)" in output(supervisor)
    assert supervisor.children == []


def test_an_unreachable_redis_url_fails_with_advice(tmp_path: Path) -> None:
    supervisor = Supervisor(out=io.StringIO())
    config = Config(var_dir=tmp_path, redis_url=f"unix://{tmp_path}/none.sock")

    code = run_stack(config, Plan(steps=[], services=[]), threading.Event(), supervisor)

    assert code == 1
    assert "unset REDIS_URL" in output(supervisor)


def test_commands_from_another_shell_find_the_local_redis_while_it_runs(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The children get REDIS_URL; a `manage.py` typed elsewhere does not. It finds the
    stack's Redis through VAR_DIR/run/redis.url, which is gone once the stack stops."""
    another_shell = textwrap.dedent("""\
        import os
        os.environ.pop("REDIS_URL")  # as in a terminal where nothing was set
        os.environ["DJANGO_SETTINGS_MODULE"] = "cs_site.settings"
        from django.conf import settings
        print("settings.REDIS_URL=" + settings.REDIS_URL)
    """)
    supervisor = Supervisor(out=io.StringIO())
    plan = Plan(
        steps=[Command("manage", [PY, "-c", another_shell])],
        services=[Command("done", [PY, "-c", "pass"])],
    )

    run_stack(Config(var_dir=tmp_path), plan, threading.Event(), supervisor)

    url = re.findall(r"started Redis \(pid \d+\) at (\S+)", output(supervisor))[0]
    assert f"settings.REDIS_URL={url}" in capfd.readouterr().out  # steps write to the terminal
    assert url.startswith("unix://")
    assert not (tmp_path / "run" / "redis.url").exists()


def test_sigint_stops_a_running_stack_and_exits_0(tmp_path: Path) -> None:
    """A real supervisor process, like `python -m devstack.stack`, with dummy services."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "healthz").write_text('{"status": "ok"}')
    (www / "metrics").write_text("# TYPE cs_worker_ready gauge\ncs_worker_ready 1.0\n")
    port = free_port()
    pid_file = tmp_path / "pids"
    web = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(www)]
    script = tmp_path / "fake_stack.py"
    script.write_text(
        textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from devstack.stack import (
            Backoff, Command, Config, Plan, Port, ReadyCheck, Supervisor, WORKER_READY_PATTERN,
            install_stop_handlers, run_stack,
        )
        url = "http://127.0.0.1:{port}"
        plan = Plan(
            steps=[Command("prepare", [sys.executable, "-c", "print('prepared')"])],
            services=[
                Command("worker", {parent_of_grandchild(pid_file)!r}),
                Command("web", {web!r}),
            ],
            ports=[Port("127.0.0.1", {port}, "PORT")],
            ready=[
                ReadyCheck("web", url + "/healthz"),
                ReadyCheck("worker", url + "/metrics", WORKER_READY_PATTERN),
            ],
            links=[("Chat demo", url + "/")],
            restart=Backoff(),
        )
        stop = install_stop_handlers()
        config = Config(var_dir=Path({str(tmp_path / "var")!r}))
        sys.exit(run_stack(config, plan, stop, Supervisor()))
    """)
    )
    process = subprocess.Popen(
        [PY, str(script)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def collect() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line:
                ready.set()

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "".join(lines)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    text = "".join(lines)

    assert "prepared" in text, text
    assert f"Chat demo: http://127.0.0.1:{port}/" in text, text
    order = ["stopping web", "stopping worker", "stopping redis", "redis stopped (exit code 0)"]
    assert [text.index(step) for step in order] == sorted(text.index(step) for step in order)
    pids = [int(pid) for pid in pid_file.read_text().split()]
    pids += [int(pid) for pid in re.findall(r"(?:started Redis|stopping \w+) \(pid (\d+)\)", text)]
    assert len(pids) == 6  # worker, its grandchild, Redis; then web, worker and Redis by name
    assert not [pid for pid in pids if pid_alive(pid)]


# --- The product's own configuration ----------------------------------------------------------


def test_config_from_env() -> None:
    config = Config.from_env(
        {
            "HOST": "0.0.0.0",
            "PORT": "8080",
            "INFERENCE_METRICS_PORT": "9200",
            "REDIS_URL": "redis://r:6379/0",
            "VAR_DIR": "/srv/var",
        }
    )
    assert (config.host, config.port, config.metrics_port) == ("0.0.0.0", 8080, 9200)
    assert config.redis_url == "redis://r:6379/0"
    assert config.var_dir == Path("/srv/var")
    assert Config.from_env({}) == Config()
    assert Config().demo_page  # `make run` shows the demo page, unlike the settings' default
    assert not Config.from_env({"DEMO_PAGE": "false"}).demo_page
    assert Config.from_env({"DEMO_PAGE": "yes"}).demo_page
    with pytest.raises(ValueError, match="PORT must be a number"):
        Config.from_env({"PORT": "eighty"})


def test_url_host() -> None:
    assert url_host("0.0.0.0") == "127.0.0.1"
    assert url_host("::") == "[::1]"
    assert url_host("::1") == "[::1]"
    assert url_host("localhost") == "localhost"


def test_product_plan_runs_the_desk() -> None:
    plan = product_plan(Config(host="0.0.0.0", port=8081, metrics_port=9102))
    assert [step.argv[2:] for step in plan.steps] == [
        ["prepare_model"],
        ["migrate", "--noinput"],
        ["import_knowledge", "--sample"],
        ["import_actions", "--sample"],
        ["collectstatic", "--noinput"],
    ]
    assert [service.name for service in plan.services] == [
        "worker",
        "webhooks",
        "connectors",
        "web",
    ]
    assert plan.services[1].argv[2:] == ["run_webhooks"]
    assert plan.services[2].argv[2:] == ["run_connectors"]
    assert plan.services[3].argv[-5:] == ["-b", "0.0.0.0", "-p", "8081", "cs_site.asgi:application"]
    assert ReadyCheck("web", "http://127.0.0.1:8081/healthz") in plan.ready
    assert ("Admin", "http://127.0.0.1:8081/admin/") in plan.links
    assert [port.port for port in plan.ports] == [8081, 9102]
    assert ("Worker metrics", "http://127.0.0.1:9102/metrics") in plan.links
    assert plan.restart == Backoff(first=1, maximum=30, reset_after=60)
    assert ("Chat demo", "http://127.0.0.1:8081/") in plan.links


def test_make_run_turns_the_demo_page_on_for_its_processes(tmp_path) -> None:
    env = child_env({}, Config(var_dir=tmp_path), "redis://r:6379/0")
    assert env["DEMO_PAGE"] == "true"
    # The sample actions reach the sample shop on the port the desk serves on.
    assert env["ACTIONS_SAMPLE_BASE_URL"] == "http://127.0.0.1:8000"
    moved = child_env({}, Config(var_dir=tmp_path, port=8081), "redis://r")
    assert moved["ACTIONS_SAMPLE_BASE_URL"] == "http://127.0.0.1:8081"
    off = Config(demo_page=False)
    assert child_env({"DEMO_PAGE": "false"}, off, "redis://r")["DEMO_PAGE"] == "false"
    assert "Chat demo" not in dict(product_plan(off).links)


def test_product_plan_without_worker_metrics_skips_that_check() -> None:
    plan = product_plan(Config(metrics_port=0))
    assert [check.name for check in plan.ready] == ["web"]
    assert [port.port for port in plan.ports] == [8000]


@pytest.mark.parametrize(
    ("body", "ready"),
    [
        ("cs_worker_ready 1.0\n", True),
        ('cs_worker_ready{model="m"} 1.0\n', True),
        ("cs_worker_ready 1\n", True),
        ("cs_worker_ready 0.0\n", False),
        ("cs_worker_ready 10.0\n", False),
    ],
)
def test_worker_ready_pattern(body: str, ready: bool) -> None:
    assert (re.search(WORKER_READY_PATTERN, body, re.MULTILINE) is not None) is ready
