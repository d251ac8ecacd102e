"""CPU and memory of the processes under test, sampled in a thread while a step runs."""

import threading
import time
from dataclasses import dataclass

import psutil
import redis

PREFIX = "asgi"  # channels-redis's default key prefix, which the settings keep


@dataclass
class Mark:
    at: float
    cpu: dict[str, float]  # process name → CPU seconds (user + system) so far
    machine_busy: float  # CPU seconds of all cores, not idle


class Sampler:
    """`mark()` takes a reading; `cpu_percent(a, b)` is each process's CPU between two marks
    (100 % = one core busy all the time); `peak_rss_mb()` is the highest resident memory seen
    since `reset_peak()`, and `peak_backlog` the most messages seen waiting in Redis for one
    process (both sampled every 0.25 s)."""

    def __init__(self, processes: dict[str, psutil.Process], redis_url: str | None = None):
        self.processes = processes
        self.peaks: dict[str, float] = {}
        self.redis = redis.Redis.from_url(redis_url) if redis_url else None
        self.peak_backlog = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch_memory, daemon=True)
        self._thread.start()

    def mark(self) -> Mark:
        cpu = {}
        for name, process in self.processes.items():
            try:
                times = process.cpu_times()
                cpu[name] = times.user + times.system
            except psutil.Error:
                cpu[name] = float("nan")
        machine = psutil.cpu_times()
        return Mark(time.monotonic(), cpu, sum(machine) - machine.idle - machine.iowait)

    @staticmethod
    def cpu_percent(start: Mark, end: Mark) -> dict[str, float]:
        wall = max(end.at - start.at, 1e-9)
        shares = {name: 100 * (end.cpu[name] - start.cpu[name]) / wall for name in start.cpu}
        shares["machine"] = 100 * (end.machine_busy - start.machine_busy) / wall
        return shares

    def rss_mb(self, name: str) -> float:
        return self.processes[name].memory_info().rss / 2**20

    def reset_peak(self) -> None:
        self.peaks.clear()
        self.peak_backlog = 0

    def peak_rss_mb(self, name: str) -> float:
        return max(self.peaks.get(name, 0.0), self.rss_mb(name))

    def _watch_memory(self) -> None:
        while not self._stop.wait(0.25):
            for name, process in list(self.processes.items()):
                try:
                    rss = process.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peaks[name] = max(self.peaks.get(name, 0.0), rss)
            if self.redis is not None:
                self.peak_backlog = max(self.peak_backlog, self.backlog())

    def backlog(self) -> int:
        """Messages waiting in Redis for a process to read them: every process-local channel
        of one process (its sockets, its answers) shares one key, read one message at a time."""
        try:
            keys = self.redis.keys(f"{PREFIX}specific.*!")
            return max((self.redis.zcard(key) for key in keys), default=0)
        except redis.RedisError:
            return 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self.redis is not None:
            self.redis.close()
