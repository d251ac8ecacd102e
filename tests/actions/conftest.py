"""Fixtures of the action tests: real HTTP back ends, and settings for the actions."""

import pytest

from chat.actions import limits as action_limits
from tests.actions.helpers import BackEnd, start_back_end


@pytest.fixture
def back_end() -> BackEnd:
    server, thread = start_back_end()
    yield server
    server.server.shutdown()
    server.server.server_close()
    thread.join(5)


@pytest.fixture
def other_host() -> BackEnd:
    """A second back end: where a redirect would lead."""
    server, thread = start_back_end()
    yield server
    server.server.shutdown()
    server.server.server_close()
    thread.join(5)


@pytest.fixture
def actions_settings(settings):
    """actions_settings(KEY=value, ...) overrides settings.ACTIONS for one test."""

    def override(**values):
        settings.ACTIONS = {**settings.ACTIONS, **values}

    return override


@pytest.fixture(autouse=True)
async def close_action_limits():
    yield
    await action_limits.close()
