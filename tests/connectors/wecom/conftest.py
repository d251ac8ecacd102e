import pytest

from connectors.wecom.client import WeComClient
from connectors.wecom.crypto import WeComCrypto

from .standin import WeComAPIStandIn

CORP_ID = "wwstandincorp01"
KF = "wkstandinkf01"
CUSTOMER = "wmstandincustomer01"


class ManualClock:
    """The client's monotonic clock, moved by hand so a token's lifetime passes at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def standin():
    server = WeComAPIStandIn(corp_id=CORP_ID).start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(standin, clock):
    wecom = WeComClient(
        corp_id=standin.corp_id,
        corp_secret=standin.corp_secret,
        base_url=standin.base_url,
        clock=clock,
    )
    yield wecom
    await wecom.aclose()


@pytest.fixture
def desk_crypto() -> WeComCrypto:
    """The desk's callback settings for the stand-in's corp."""
    return WeComCrypto(
        token="DeskCallbackToken",
        encoding_aes_key="jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        receive_id=CORP_ID,
    )
