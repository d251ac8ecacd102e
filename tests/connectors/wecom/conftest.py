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
        token=DESK_TOKEN,
        encoding_aes_key=DESK_AES_KEY,
        receive_id=CORP_ID,
    )


# --- The desk's side: a WeCom inbox whose API is the stand-in ---------------------------------

DESK_TOKEN = "DeskCallbackToken"
DESK_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"


@pytest.fixture
def desk_site():
    from chat.models import Site

    return Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")


def inbox_settings(standin: WeComAPIStandIn, **more: str) -> dict:
    return {
        "corp_id": standin.corp_id,
        "secret": standin.corp_secret,
        "token": DESK_TOKEN,
        "encoding_aes_key": DESK_AES_KEY,
        "open_kfid": KF,
        "api_base": standin.base_url,
        **more,
    }


@pytest.fixture
def wecom_inbox(desk_site, standin):
    from chat.models import Inbox

    return Inbox.objects.create(
        site=desk_site, kind=Inbox.Kind.WECOM, name="WeChat", settings=inbox_settings(standin)
    )


# The connectors process's loop, quick to retry, as the e-mail channel's tests run it.
from tests.connectors.email.conftest import fast_connectors, running_connectors  # noqa: E402,F401
