"""WeCom's callback encryption (the WXBizMsgCrypt scheme), with `cryptography`'s AES.

WeCom signs and encrypts every callback it sends to the desk's URL:

- msg_signature = SHA1 of the lexically sorted concatenation of the Token, the timestamp, the
  nonce and the encrypted message (hex).
- AESKey = base64decode(EncodingAESKey + "="): the EncodingAESKey is 43 base64 characters, the
  key 32 bytes, so AES-256-CBC; the IV is the key's first 16 bytes.
- The plaintext is 16 random bytes, the message's length in 4 bytes (network order), the
  message, then the receive id (the corp id for the WeChat customer-service callbacks), padded
  with PKCS#7 to a multiple of 32 bytes; the ciphertext travels in base64.
- Verifying the URL is the same decryption of the GET's `echostr`; the plaintext goes back as
  the response body.

Sources: WeCom's "加解密方案说明" (https://developer.work.weixin.qq.com/document/path/91144:
the terms, the steps, and a worked example whose values the tests check), and the official
WXBizMsgCrypt samples' Token "QDG6eK" vectors. That page says an EncodingAESKey is drawn from
a-z, A-Z and 0-9; the check here takes the whole base64 alphabet, which contains them.

Every way a message can be wrong raises one exception, WeComCryptoError, with a reason that
names what failed and nothing of the message or the key.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# WeCom pads to 32-byte blocks (twice AES's), so a pad byte is 1..32.
PAD_BLOCK = 32
RANDOM_PREFIX = 16
LENGTH_FIELD = 4
# An EncodingAESKey is exactly 43 characters of the standard base64 alphabet.
ENCODING_AES_KEY = re.compile(r"[A-Za-z0-9+/]{43}")
# Callbacks are small events; a larger ciphertext is refused before any work is done on it.
MAX_ENCRYPTED_CHARS = 64 * 1024


class WeComCryptoError(ValueError):
    """A callback that cannot be trusted or read; `reason` says which check failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key an EncodingAESKey stands for; a malformed one is refused."""
    if not isinstance(encoding_aes_key, str) or not ENCODING_AES_KEY.fullmatch(encoding_aes_key):
        raise WeComCryptoError("the EncodingAESKey must be 43 characters of base64")
    return base64.b64decode(encoding_aes_key + "=")


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    """msg_signature: SHA1 over the four values sorted and joined."""
    joined = "".join(sorted([token, timestamp, nonce, encrypted]))
    return hashlib.sha1(joined.encode()).hexdigest()


class WeComCrypto:
    """The desk's side of one callback configuration: its Token, EncodingAESKey and corp id."""

    def __init__(self, *, token: str, encoding_aes_key: str, receive_id: str):
        if not token:
            raise WeComCryptoError("the Token is empty")
        if not receive_id:
            raise WeComCryptoError("the receive id (corp id) is empty")
        self.token = token
        self.receive_id = receive_id
        self._key = decode_aes_key(encoding_aes_key)

    def __repr__(self) -> str:
        # The Token and the key are secrets: a repr in a traceback shows neither.
        return f"WeComCrypto(receive_id={self.receive_id!r})"

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def sign(self, *, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self.token, timestamp, nonce, encrypted)

    def check_signature(
        self, *, msg_signature: str, timestamp: str, nonce: str, encrypted: str
    ) -> None:
        expected = self.sign(timestamp=timestamp, nonce=nonce, encrypted=encrypted)
        # Compared as bytes in constant time: the received value may hold any character.
        if not hmac.compare_digest(expected.encode(), msg_signature.lower().encode()):
            raise WeComCryptoError("the signature does not match")

    def decrypt(self, *, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> str:
        """The message inside `encrypted`, once its signature, padding, length and receive id
        all hold."""
        if len(encrypted) > MAX_ENCRYPTED_CHARS:
            raise WeComCryptoError("the encrypted message is too large")
        self.check_signature(
            msg_signature=msg_signature, timestamp=timestamp, nonce=nonce, encrypted=encrypted
        )
        try:
            ciphertext = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise WeComCryptoError("the encrypted message is not base64") from None
        if not ciphertext or len(ciphertext) % 16:
            raise WeComCryptoError("the ciphertext is not a whole number of AES blocks")
        decryptor = self._cipher().decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        content = _unpad(padded)
        if len(content) < RANDOM_PREFIX + LENGTH_FIELD:
            raise WeComCryptoError("the plaintext is too short")
        (length,) = struct.unpack(">I", content[RANDOM_PREFIX : RANDOM_PREFIX + LENGTH_FIELD])
        start = RANDOM_PREFIX + LENGTH_FIELD
        if start + length > len(content):
            raise WeComCryptoError("the message length runs past the plaintext")
        message, receive_id = content[start : start + length], content[start + length :]
        if not hmac.compare_digest(receive_id, self.receive_id.encode()):
            raise WeComCryptoError("the message is for another receive id")
        try:
            return message.decode()
        except UnicodeDecodeError:
            raise WeComCryptoError("the message is not UTF-8") from None

    def verify_url(self, *, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """The plaintext echostr to answer WeCom's URL verification GET with."""
        return self.decrypt(
            msg_signature=msg_signature, timestamp=timestamp, nonce=nonce, encrypted=echostr
        )

    def encrypt(self, message: str, *, random_prefix: bytes | None = None) -> str:
        """`message` encrypted for this receive id, base64 (what goes in <Encrypt>).
        `random_prefix` (16 bytes) is for reproducing published vectors only."""
        prefix = secrets.token_bytes(RANDOM_PREFIX) if random_prefix is None else random_prefix
        if len(prefix) != RANDOM_PREFIX:
            raise WeComCryptoError("the random prefix must be 16 bytes")
        body = message.encode()
        plain = prefix + struct.pack(">I", len(body)) + body + self.receive_id.encode()
        encryptor = self._cipher().encryptor()
        ciphertext = encryptor.update(_pad(plain)) + encryptor.finalize()
        return base64.b64encode(ciphertext).decode()


def _pad(data: bytes) -> bytes:
    amount = PAD_BLOCK - len(data) % PAD_BLOCK
    return data + bytes([amount]) * amount


def _unpad(data: bytes) -> bytes:
    amount = data[-1]
    if not 1 <= amount <= PAD_BLOCK or amount > len(data):
        raise WeComCryptoError("the padding is malformed")
    if not hmac.compare_digest(data[-amount:], bytes([amount]) * amount):
        raise WeComCryptoError("the padding is malformed")
    return data[:-amount]
