"""WeCom's callback encryption, checked against the published vectors and against tampering."""

import base64
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from connectors.wecom.crypto import WeComCrypto, WeComCryptoError, decode_aes_key, signature

# The worked example of WeCom's "加解密方案说明"
# (https://developer.work.weixin.qq.com/document/path/91144) and of the official WXBizMsgCrypt
# samples (Sample.py / Sample.cs): corp id, Token, EncodingAESKey, a POSTed callback and its
# plaintext, and a URL verification GET.
CORP_ID = "wx5823bf96d3bd56c7"
TOKEN = "QDG6eK"
ENCODING_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
POST_SIGNATURE = "477715d11cdb4164915debcba66cb864d751f3e6"
POST_TIMESTAMP = "1409659813"
POST_NONCE = "1372623149"
POST_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3Qczcd"
    "CUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd"
    "4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r"
    "+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4"
    "XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGH"
    "BZZIs2pDBS8R07+qN+E7Q=="
)
POST_PLAINTEXT = (
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
    "<FromUserName><![CDATA[mycreate]]></FromUserName>\n"
    "<CreateTime>1409659813</CreateTime>\n"
    "<MsgType><![CDATA[text]]></MsgType>\n"
    "<Content><![CDATA[hello]]></Content>\n"
    "<MsgId>4561255354251345929</MsgId>\n"
    "<AgentID>218</AgentID>\n"
    "</xml>"
)
VERIFY_SIGNATURE = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
VERIFY_TIMESTAMP = "1409659589"
VERIFY_NONCE = "263014780"
VERIFY_ECHOSTR = (
    "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
)
VERIFY_PLAINTEXT = "1616140317555161061"


@pytest.fixture
def crypto() -> WeComCrypto:
    return WeComCrypto(token=TOKEN, encoding_aes_key=ENCODING_AES_KEY, receive_id=CORP_ID)


def test_the_documented_signature_is_sha1_of_the_sorted_values():
    assert signature(TOKEN, POST_TIMESTAMP, POST_NONCE, POST_ENCRYPT) == POST_SIGNATURE


def test_the_documented_callback_decrypts_to_the_documented_message(crypto):
    message = crypto.decrypt(
        msg_signature=POST_SIGNATURE,
        timestamp=POST_TIMESTAMP,
        nonce=POST_NONCE,
        encrypted=POST_ENCRYPT,
    )
    assert message == POST_PLAINTEXT


def test_the_documented_url_verification_gives_back_the_echostr(crypto):
    echostr = crypto.verify_url(
        msg_signature=VERIFY_SIGNATURE,
        timestamp=VERIFY_TIMESTAMP,
        nonce=VERIFY_NONCE,
        echostr=VERIFY_ECHOSTR,
    )
    assert echostr == VERIFY_PLAINTEXT


def test_the_signature_may_arrive_in_capitals(crypto):
    message = crypto.decrypt(
        msg_signature=POST_SIGNATURE.upper(),
        timestamp=POST_TIMESTAMP,
        nonce=POST_NONCE,
        encrypted=POST_ENCRYPT,
    )
    assert "hello" in message


def test_encryption_reproduces_a_published_ciphertext():
    # wechatpy's test of the WeCom scheme (tests/test_crypto.py, test_encrypt_message): with
    # the random prefix fixed, the ciphertext and its signature are known.
    crypto = WeComCrypto(
        token="123456",
        encoding_aes_key="kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
        receive_id="wx49f0ab532d5d035a",
    )
    reply = (
        "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n"
        "<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n"
        "<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n"
        "<CreateTime>1411525903</CreateTime>\n</xml>"
    )
    encrypted = crypto.encrypt(reply, random_prefix=b"1234567890123456")
    assert encrypted == (
        "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgN"
        "cBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5w"
        "Y0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXs"
        "VbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtA"
        "GVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3"
    )
    signed = crypto.sign(timestamp="1411525903", nonce="461056294", encrypted=encrypted)
    assert signed == "407518b7649e86ef23978113f92d27afa9296533"


@pytest.mark.parametrize("message", ["", "a", "您好，我的订单还没到。" * 3, "x" * 5000])
def test_a_message_round_trips(crypto, message):
    encrypted = crypto.encrypt(message)
    signed = crypto.sign(timestamp="1700000000", nonce="42", encrypted=encrypted)
    back = crypto.decrypt(
        msg_signature=signed, timestamp="1700000000", nonce="42", encrypted=encrypted
    )
    assert back == message
    # Every encryption draws a new random prefix, so equal messages never look equal.
    assert crypto.encrypt(message) != encrypted


def _decrypt(crypto: WeComCrypto, encrypted: str) -> str:
    signed = crypto.sign(timestamp="1", nonce="2", encrypted=encrypted)
    return crypto.decrypt(msg_signature=signed, timestamp="1", nonce="2", encrypted=encrypted)


def _raw_ciphertext(plaintext: bytes) -> str:
    """AES-CBC of `plaintext` exactly as given (no padding added), under the sample key."""
    key = decode_aes_key(ENCODING_AES_KEY)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plaintext) + encryptor.finalize()).decode()


def test_a_tampered_signature_is_refused(crypto):
    with pytest.raises(WeComCryptoError) as refused:
        crypto.decrypt(
            msg_signature=POST_SIGNATURE[:-1] + "0",
            timestamp=POST_TIMESTAMP,
            nonce=POST_NONCE,
            encrypted=POST_ENCRYPT,
        )
    assert refused.value.reason == "the signature does not match"


@pytest.mark.parametrize("field", ["timestamp", "nonce"])
def test_a_changed_timestamp_or_nonce_breaks_the_signature(crypto, field):
    values = {"timestamp": POST_TIMESTAMP, "nonce": POST_NONCE} | {field: "1"}
    with pytest.raises(WeComCryptoError, match="signature"):
        crypto.decrypt(msg_signature=POST_SIGNATURE, encrypted=POST_ENCRYPT, **values)


def test_a_message_for_another_corp_is_refused(crypto):
    other = WeComCrypto(token=TOKEN, encoding_aes_key=ENCODING_AES_KEY, receive_id="wwOtherCorp")
    with pytest.raises(WeComCryptoError) as refused:
        _decrypt(crypto, other.encrypt("<xml/>"))
    assert refused.value.reason == "the message is for another receive id"
    # …and a corp id that merely starts like ours is another corp too.
    longer = WeComCrypto(token=TOKEN, encoding_aes_key=ENCODING_AES_KEY, receive_id=CORP_ID + "x")
    with pytest.raises(WeComCryptoError, match="receive id"):
        _decrypt(crypto, longer.encrypt("<xml/>"))


def test_a_message_under_another_key_is_refused(crypto):
    other = WeComCrypto(token=TOKEN, encoding_aes_key="A" * 43, receive_id=CORP_ID)
    with pytest.raises(WeComCryptoError):
        _decrypt(crypto, other.encrypt("<xml/>"))


@pytest.mark.parametrize(
    "tail",
    [
        bytes([0]) * 32,  # a pad of 0
        bytes([33]) * 32,  # longer than a block
        bytes([7]) * 31 + bytes([8]),  # pad bytes that disagree
    ],
)
def test_bad_padding_is_refused(crypto, tail):
    body = b"<xml/>"
    head = b"R" * 16 + struct.pack(">I", len(body)) + body + CORP_ID.encode()
    plaintext = head + b"-" * (-len(head) % 32) + tail
    with pytest.raises(WeComCryptoError) as refused:
        _decrypt(crypto, _raw_ciphertext(plaintext))
    assert refused.value.reason == "the padding is malformed"


def test_a_length_running_past_the_plaintext_is_refused(crypto):
    body = b"<xml/>"
    plain = b"R" * 16 + struct.pack(">I", 10_000) + body + CORP_ID.encode()
    padded = plain + bytes([32 - len(plain) % 32]) * (32 - len(plain) % 32)
    with pytest.raises(WeComCryptoError) as refused:
        _decrypt(crypto, _raw_ciphertext(padded))
    assert refused.value.reason == "the message length runs past the plaintext"


def test_a_plaintext_shorter_than_its_header_is_refused(crypto):
    with pytest.raises(WeComCryptoError, match="too short"):
        _decrypt(crypto, _raw_ciphertext(b"R" * 10 + bytes([22]) * 22))


@pytest.mark.parametrize(
    "cut",
    [
        lambda raw: raw[:-16],  # one AES block short: the padding no longer ends it
        lambda raw: raw[:16],  # a single block
        lambda raw: raw[:-3],  # not a whole number of blocks
        lambda raw: b"",  # nothing at all
    ],
)
def test_a_truncated_ciphertext_is_refused(crypto, cut):
    raw = base64.b64decode(crypto.encrypt("<xml><Content>hello</Content></xml>"))
    with pytest.raises(WeComCryptoError):
        _decrypt(crypto, base64.b64encode(cut(raw)).decode())


@pytest.mark.parametrize("encrypted", ["not base64!", "QUJD=", "QUJDRA==\n"])
def test_text_that_is_not_base64_is_refused(crypto, encrypted):
    with pytest.raises(WeComCryptoError):
        _decrypt(crypto, encrypted)


def test_an_oversized_ciphertext_is_refused_before_any_work(crypto):
    with pytest.raises(WeComCryptoError, match="too large"):
        crypto.decrypt(msg_signature="x", timestamp="1", nonce="2", encrypted="A" * 70_000)


def test_random_damage_only_ever_raises_the_one_exception(crypto):
    # Flip bytes of a valid ciphertext and sign the result (as an attacker with the Token
    # could): whatever comes out, the decryption raises WeComCryptoError or returns text.
    raw = bytearray(base64.b64decode(crypto.encrypt("<xml><Content>hello</Content></xml>")))
    rng = random.Random(20261207)
    refused = 0
    for _ in range(300):
        damaged = bytearray(raw)
        for _flip in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        try:
            _decrypt(crypto, base64.b64encode(bytes(damaged)).decode())
        except WeComCryptoError:
            refused += 1
    assert refused > 200  # most are caught (a flip in a random prefix block can pass)


@pytest.mark.parametrize(
    "key",
    [
        ENCODING_AES_KEY[:-1],  # 42 characters
        ENCODING_AES_KEY + "A",  # 44
        ENCODING_AES_KEY[:-1] + "=",  # padding is not part of it
        ENCODING_AES_KEY[:-1] + "-",  # not the base64 alphabet
        "",
    ],
)
def test_an_encoding_aes_key_that_is_not_43_base64_characters_is_refused(key):
    with pytest.raises(WeComCryptoError, match="43 characters"):
        WeComCrypto(token=TOKEN, encoding_aes_key=key, receive_id=CORP_ID)


def test_the_key_is_32_bytes_and_the_repr_shows_no_secret(crypto):
    assert len(decode_aes_key(ENCODING_AES_KEY)) == 32
    assert TOKEN not in repr(crypto) and ENCODING_AES_KEY not in repr(crypto)
