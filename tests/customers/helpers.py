"""Sites with an identity secret, and customer tokens signed as a company's back end signs
them (PyJWT, HS256), or signed wrongly on purpose."""

import base64
import json
import time
import warnings

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from chat import services
from chat.models import Site

SHOP = "https://shop.example.com"


def make_site(name: str = "Shop", origin: str = SHOP, *, secret: bool = True) -> Site:
    """A site allowing `origin`, with a fresh identity secret (`site.identity_secret`)."""
    site = Site.objects.create(name=name, allowed_origins=origin)
    if secret:
        services.site_identity_secret_renew(site=site)
    return site


def sign(
    secret: str, sub: object = "cust-42", *, expires_in: float = 600, algorithm="HS256", **claims
) -> str:
    """A customer token: `sub`, `exp` (now + expires_in seconds) and any other claims; a claim
    given as None is left out."""
    payload = {"sub": sub, "exp": int(time.time() + expires_in), **claims}
    with warnings.catch_warnings():
        # HS384/HS512 want longer keys than a site's secret: those tokens are refused anyway.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(
            {name: value for name, value in payload.items() if value is not None},
            secret,
            algorithm=algorithm,
        )


def unsigned(payload: dict) -> str:
    """A token with `"alg": "none"` and no signature, as an attacker would forge one."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."
