"""The webhook signature: a known vector (computed with `openssl dgst -sha256 -hmac`), and
the reference verifier of docs/webhooks.md accepting it and refusing what it must."""

import hashlib
import hmac
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from webhooks import signing

SECRET = "whsec_test"
BODY = '{"id":"evt_1","type":"message.customer"}'
T = 1700000000
# printf '%s' '1700000000.{"id":"evt_1","type":"message.customer"}' |
#   openssl dgst -sha256 -hmac whsec_test
VECTOR = "894c1b153eee96efee3f7a605426d0a251a10b189c6af69f6744c140b42673a9"


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    assert signing.signature(SECRET, T, BODY) == VECTOR
    assert signing.signature_header(SECRET, BODY, timestamp=T) == f"t={T},v1={VECTOR}"


def test_the_verifier_accepts_a_fresh_signature_within_the_window():
    header = f"t={T},v1={VECTOR}"
    signing.verify(SECRET, BODY, header, now=T + 299)
    signing.verify(SECRET, BODY, header, now=T - 299)  # the receiver's clock a little behind


@pytest.mark.parametrize(
    ("secret", "body", "header", "now", "why"),
    [
        ("whsec_other", BODY, f"t={T},v1={VECTOR}", T, "mismatch"),
        (SECRET, BODY.replace("customer", "bot"), f"t={T},v1={VECTOR}", T, "mismatch"),
        (SECRET, BODY, f"t={T + 1},v1={VECTOR}", T, "mismatch"),  # timestamp is signed
        (SECRET, BODY, f"t={T},v1={VECTOR}", T + 301, "replay window"),
        (SECRET, BODY, f"v1={VECTOR}", T, "no timestamp"),
        (SECRET, BODY, f"t={T}", T, "mismatch"),
    ],
)
def test_the_verifier_refuses(secret, body, header, now, why):
    with pytest.raises(signing.InvalidSignature, match=why):
        signing.verify(secret, body, header, now=now)


def test_the_python_example_in_the_docs_verifies_the_vector():
    """The docs' receiver code is run as written, against the known vector."""
    docs = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    code = re.search(r"```python\n(.*?)```", docs, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)  # our own documentation, run as a reader would
    verify = namespace["verify_webhook"]
    header = f"t={T},v1={VECTOR}"
    assert verify(SECRET, BODY.encode(), header, now=T + 10) is True
    assert verify(SECRET, BODY.encode() + b" ", header, now=T + 10) is False
    assert verify(SECRET, BODY.encode(), header, now=T + 400) is False
    # and agrees with a plain HMAC computed here
    assert hmac.new(SECRET.encode(), f"{T}.{BODY}".encode(), hashlib.sha256).hexdigest() == VECTOR


def test_the_javascript_example_in_the_docs_verifies_the_vector(tmp_path):
    docs = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    module = tmp_path / "verify.js"
    module.write_text(re.search(r"```javascript\n(.*?)```", docs, re.S).group(1))
    script = (
        f"const {{ verifyWebhook }} = require({str(module)!r});\n"
        f"const body = Buffer.from({BODY!r});\n"
        f"const header = 't={T},v1={VECTOR}';\n"
        f"console.log(JSON.stringify([\n"
        f"  verifyWebhook({SECRET!r}, body, header, {T + 10}),\n"
        f"  verifyWebhook({SECRET!r}, Buffer.concat([body, Buffer.from(' ')]), header, {T + 10}),\n"
        f"  verifyWebhook('whsec_other', body, header, {T + 10}),\n"
        f"  verifyWebhook({SECRET!r}, body, header, {T + 400}),\n"
        f"]));\n"
    )
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, False, False, False]
