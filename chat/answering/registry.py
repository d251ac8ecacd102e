"""This process's answer runs, and the tasks they run on."""

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chat.answering.run import AnswerRun

# Runs of this process by conversation id.
runs: dict[str, "AnswerRun"] = {}
# Every task of every run (answers and their channel receivers), until it has ended: the event
# loop keeps only weak references to tasks, and a stopping process waits for these.
tasks: set[asyncio.Task] = set()


def spawn(coro) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task
