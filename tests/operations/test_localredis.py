"""The local Redis server: a real redis-server on a unix socket, started and stopped cleanly."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
import redis

from devstack import localredis
from devstack.localredis import check_redis, start_redis
from runtime import stack_redis
from tests.processes import pid_alive


def test_serves_on_a_unix_socket_and_stops_cleanly(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "run")
    try:
        assert server.url == f"unix://{tmp_path / 'run' / 'redis.sock'}"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        client.close()
        check_redis(server.url)  # answers, so no error
    finally:
        server.stop()
    assert not pid_alive(server.pid)
    assert not server.socket_path.exists()
    assert (tmp_path / "run" / "redis.log").exists()
    server.stop()  # idempotent


def test_context_manager_stops_the_server(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server:
        assert redis.Redis.from_url(server.url).ping()
    assert not pid_alive(server.pid)


def test_check_redis_on_a_dead_url_says_what_to_do(tmp_path: Path) -> None:
    url = f"unix://{tmp_path / 'nobody.sock'}"
    with pytest.raises(RuntimeError, match="unset REDIS_URL") as excinfo:
        check_redis(url, timeout=0.5)
    assert url in str(excinfo.value)


def test_long_run_dir_falls_back_to_a_short_socket_path(tmp_path: Path) -> None:
    run_dir = tmp_path / ("d" * 60) / ("e" * 60)
    with start_redis(run_dir) as server:
        assert len(str(server.socket_path)) <= localredis.MAX_SOCKET_PATH_BYTES
        assert str(server.socket_path).startswith("/tmp/cs-redis-")
        assert redis.Redis.from_url(server.url).set("k", "v")
        assert (run_dir / "redis.log").exists()  # the log stays in run_dir
    assert not server.socket_path.parent.exists()  # the short dir is removed too


def test_refuses_to_take_over_a_live_socket(tmp_path: Path) -> None:
    with start_redis(tmp_path) as first:
        with pytest.raises(RuntimeError, match="already listens"):
            start_redis(tmp_path)
        assert redis.Redis.from_url(first.url).ping()


def test_a_server_that_fails_to_start_shows_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in binary that writes a fatal line to its --logfile and exits, as Redis does.
    fake = tmp_path / "fake-redis-server"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "log = sys.argv[sys.argv.index('--logfile') + 1]\n"
        "open(log, 'w').write('FATAL CONFIG FILE ERROR\\n')\n"
        "sys.exit(1)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(localredis, "redis_server_binary", lambda: str(fake))
    with pytest.raises(RuntimeError, match="exited with code 1") as excinfo:
        start_redis(tmp_path / "run", timeout=5)
    assert "FATAL CONFIG FILE ERROR" in str(excinfo.value)


def test_a_killed_server_comes_back_on_the_same_socket(tmp_path: Path) -> None:
    with start_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        with pytest.raises(RuntimeError, match="still running"):
            server.launch()  # one server per socket
        first = server.pid
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(5)
        assert server.socket_path.exists()  # a killed server leaves its socket file

        server.launch()

        assert server.pid != first and server.url == f"unix://{tmp_path / 'redis.sock'}"
        deadline = time.monotonic() + 10
        while not _answers(client):  # the client made before the crash reconnects
            assert time.monotonic() < deadline, "the restarted server does not answer"
            time.sleep(0.05)
    assert not pid_alive(first) and not pid_alive(server.pid)
    assert not server.socket_path.exists()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


# --- The record that lets commands from another shell find it (runtime/stack_redis.py) ------


def test_the_recorded_url_is_used_only_while_its_redis_answers(tmp_path: Path) -> None:
    var = tmp_path / "var"
    assert stack_redis.find(var) is None  # no stack has run here
    with start_redis(var / "run") as server:
        stack_redis.record(var, server.url)
        assert stack_redis.url_file(var).read_text() == server.url + "\n"
        assert stack_redis.find(var) == server.url

        # A crash (kill -9, power loss) leaves the record and the socket file behind.
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(5)
        assert server.socket_path.exists() and stack_redis.url_file(var).exists()
        assert stack_redis.find(var) is None

        server.launch()  # back on the same socket, as `make run` restarts it
        deadline = time.monotonic() + 10
        while stack_redis.find(var) != server.url:
            assert time.monotonic() < deadline, "the restarted server is not found again"
            time.sleep(0.05)


def test_a_record_that_is_not_a_local_socket_is_ignored(tmp_path: Path) -> None:
    stack_redis.url_file(tmp_path).parent.mkdir(parents=True)
    for text in ("redis://desk:secret@db.example:6379/0\n", "garbage", "unix://\n", ""):
        stack_redis.url_file(tmp_path).write_text(text)
        assert stack_redis.find(tmp_path) is None
    with pytest.raises(ValueError, match="only a local unix-socket Redis"):
        stack_redis.record(tmp_path, "redis://127.0.0.1:6379/0")


def test_forgetting_removes_only_its_own_record(tmp_path: Path) -> None:
    stack_redis.record(tmp_path, "unix:///tmp/new-stack.sock")
    stack_redis.forget(tmp_path, "unix:///tmp/old-stack.sock")  # a stack that stopped late
    assert stack_redis.url_file(tmp_path).exists()
    stack_redis.forget(tmp_path, "unix:///tmp/new-stack.sock")
    assert not stack_redis.url_file(tmp_path).exists()
    stack_redis.forget(tmp_path, "unix:///tmp/new-stack.sock")  # idempotent
