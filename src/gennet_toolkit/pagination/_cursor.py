"""Opaque, versioned, optionally signed cursors: the wire format and its strict decoder.

Layout (before base64url, no padding)::

    0x01 | canonical JSON [direction, issued_at, query_hash, [values...]] | HMAC tag (16 bytes)
    0x01 | nonce (12 bytes) | AES-256-GCM(JSON) with its tag     (encrypt=True)

The HMAC tag is present only when a secret is configured; with ``encrypt=True`` the
payload is sealed with AES-GCM instead (confidential and authenticated). ``query_hash``
binds the cursor to one paginator, sort spec and filter fingerprint. The decoder treats
every byte as hostile: any failure is an :class:`InvalidCursor` (400), never another
exception.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from gennet_toolkit._optional import require
from gennet_toolkit.exceptions import BadRequest, ConfigurationError, FieldError

__all__ = [
    "CURSOR_VERSION",
    "Cursor",
    "CursorCodec",
    "Direction",
    "InvalidCursor",
    "query_hash",
]

#: Version byte of the cursor layout; cursors of any other version are rejected.
CURSOR_VERSION: Final = 1
_VERSION_BYTE: Final = bytes([CURSOR_VERSION])
_TAG_SIZE: Final = 16
_NONCE_SIZE: Final = 12
_MIN_SECRET_BYTES: Final = 16
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_MAX_DECIMAL_DIGITS = 1000
# One encoder for all: json.dumps() with options builds a new encoder per call. For a
# str, encode() goes straight to the C string escaper.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# raw_decode() skips json.loads()' wrapper and whitespace regexes; the caller checks that
# the whole text was consumed.
_raw_decode = json.JSONDecoder().raw_decode
# base64url <-> standard alphabet as byte tables. Decoding maps "+", "/" and "=" to an
# invalid byte so that strict binascii refuses them: only the url alphabet, unpadded.
_TO_URL: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URL: Final = bytes.maketrans(b"-_+/=", b"+/!!!")
_PAD: Final = (b"", b"===", b"==", b"=")

#: ``a``/``b``: rows strictly after/before the key; ``A``/``B``: at or after/before it
#: (the way back from an empty page, so the row at the key is not lost).
Direction = Literal["a", "b", "A", "B"]
_DIRECTIONS: Final = frozenset({"a", "b", "A", "B"})


class InvalidCursor(BadRequest):
    """The ``cursor`` parameter is malformed, tampered with, expired or made for another query."""

    code = "invalid_cursor"
    title = "Invalid cursor"
    default_detail = "The cursor is not valid for this request; start again from the first page."

    def __init__(self, reason: str, *, param: str = "cursor") -> None:
        # ``reason`` is one of a fixed set of words; the submitted cursor is never echoed.
        super().__init__(
            extra={"reason": reason},
            errors=[FieldError(self.default_detail, location="query", name=param, code=reason)],
        )
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor: a position (sort-key values), a direction and what it is bound to."""

    values: tuple[Any, ...]
    direction: Direction
    query_hash: str
    issued_at: int


def query_hash(*parts: str) -> str:
    """A short digest binding a cursor to its paginator name, sort spec and filter fingerprint."""
    h = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).digest()
    return _b64encode(h[:9])


# --------------------------------------------------------------------------- values


def _encode_value(v: Any) -> Any:
    # JSON carries int/str/bool/None exactly; everything else gets a one-letter tag so
    # the decoder rebuilds the very type (float vs Decimal vs int, date vs datetime).
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return ["f", repr(v)]
    if isinstance(v, Decimal):
        return ["n", str(v)]
    if isinstance(v, dt.datetime):
        return ["t", v.isoformat()]
    if isinstance(v, dt.date):
        return ["d", v.isoformat()]
    if isinstance(v, dt.time):
        return ["h", v.isoformat()]
    if isinstance(v, uuid.UUID):
        return ["u", v.hex]
    if isinstance(v, bytes):
        return ["x", _b64encode(v)]
    raise ConfigurationError(
        f"a sort key of type {type(v).__name__} cannot go into a cursor; sort on a "
        "column of type int, str, float, Decimal, datetime, date, time, UUID, bool or bytes"
    )


def _valid_str(s: str) -> bool:
    # NUL and lone surrogates are refused by PostgreSQL drivers with an error (a 500).
    if "\x00" in s:
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode_value(raw: Any) -> Any:
    if raw is None or isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        if not _INT64_MIN <= raw <= _INT64_MAX:
            raise ValueError("integer out of range")
        return raw
    if isinstance(raw, str):
        if not _valid_str(raw):
            raise ValueError("bad string")
        return raw
    if not (isinstance(raw, list) and len(raw) == 2):
        raise ValueError("bad value")
    tag, text = raw
    if not isinstance(text, str) or not text.isascii() or "\x00" in text:
        raise ValueError("bad value")
    if tag == "f":
        return float(text)
    if tag == "n":
        d = Decimal(text)
        if d.is_snan() or (
            d.is_finite()
            and (len(d.as_tuple().digits) > _MAX_DECIMAL_DIGITS or abs(d.adjusted()) > 1000)
        ):
            raise ValueError("decimal out of range")
        return d
    if tag == "t":
        return dt.datetime.fromisoformat(text)
    if tag == "d":
        if len(text) != 10:
            raise ValueError("bad date")
        return dt.date.fromisoformat(text)
    if tag == "h":
        return dt.time.fromisoformat(text)
    if tag == "u":
        if len(text) != 32:
            raise ValueError("bad uuid")
        return uuid.UUID(hex=text)
    if tag == "x":
        return _b64decode(text) if text else b""
    raise ValueError("unknown tag")


def _encode_json(v: Any) -> str:
    # int and str are the common sort keys: written directly (the same bytes the JSON
    # encoder writes); everything else goes through the tagged form and the encoder.
    t = type(v)
    if t is int:
        return int.__repr__(v)
    if t is str:
        return _dumps(v)
    return _dumps(_encode_value(v))


def _decode_fast(raw: Any) -> Any:
    t = type(raw)
    if t is int:
        if _INT64_MIN <= raw <= _INT64_MAX:
            return raw
        raise ValueError("integer out of range")
    if t is str and raw.isascii() and "\x00" not in raw:
        return raw  # ASCII cannot hold a lone surrogate
    return _decode_value(raw)


def _b64encode(raw: bytes) -> str:
    """base64url without padding."""
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URL).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict base64url without padding: any other character is a ``ValueError``."""
    # The lenient stdlib decoders skip foreign characters; strict_mode does not.
    data = text.encode("ascii").translate(_FROM_URL)
    return binascii.a2b_base64(data + _PAD[len(data) % 4], strict_mode=True)


def _secret_bytes(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < _MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"a cursor secret needs at least {_MIN_SECRET_BYTES} bytes "
            "(use secrets.token_urlsafe())"
        )
    return key


class CursorCodec:
    """Encodes and strictly decodes cursors.

    ``secret`` (str or bytes, or a sequence of them for rotation: the first signs, all
    verify) turns on HMAC-SHA256 signing; ``encrypt=True`` seals cursors with AES-256-GCM
    under a key derived from the secret instead, so sort-key values cannot be read from
    them (needs ``cryptography``); ``max_age`` (seconds) expires cursors; ``max_length``
    caps the accepted cursor text before any work is done.
    """

    def __init__(
        self,
        *,
        secret: str | bytes | Sequence[str | bytes] | None = None,
        max_age: float | None = None,
        max_length: int = 2048,
        param: str = "cursor",
        encrypt: bool = False,
    ) -> None:
        if secret is None:
            self._keys: tuple[bytes, ...] = ()
        elif isinstance(secret, str | bytes):
            self._keys = (_secret_bytes(secret),)
        else:
            self._keys = tuple(_secret_bytes(s) for s in secret)
            if not self._keys:
                raise ConfigurationError("secret= is an empty sequence")
        if max_age is not None and max_age <= 0:
            raise ConfigurationError("max_age must be positive")
        # Keyed once: a copy per call skips re-hashing the padded key (two SHA-256 blocks).
        self._macs = tuple(hmac.new(k, digestmod=hashlib.sha256) for k in self._keys)
        self._aeads: tuple[Any, ...] = ()
        self._invalid_tag: type[Exception] = Exception
        if encrypt:
            if not self._keys:
                raise ConfigurationError("encrypt=True needs a secret")
            aead = require(
                "cryptography.hazmat.primitives.ciphers.aead",
                extra="crypto",
                feature="gennet_toolkit.pagination (encrypt=True)",
            )
            self._invalid_tag = require(
                "cryptography.exceptions", extra="crypto", feature="gennet_toolkit.pagination"
            ).InvalidTag
            # A separate key for encryption, derived so the HMAC key is never reused.
            self._aeads = tuple(
                aead.AESGCM(hmac.digest(k, b"gennet-cursor-aes-gcm", "sha256")) for k in self._keys
            )
        self.max_age = max_age
        self.max_length = max_length
        self.param = param

    @property
    def signed(self) -> bool:
        """Whether cursors are authenticated (HMAC tag or AES-GCM)."""
        return bool(self._keys)

    @property
    def encrypted(self) -> bool:
        """Whether cursors are sealed with AES-GCM (their values are not readable)."""
        return bool(self._aeads)

    def encode(
        self,
        values: Sequence[Any],
        direction: Direction,
        bound_to: str,
        *,
        issued_at: int | None = None,
    ) -> str:
        """The opaque text of a cursor at ``values`` going ``direction``."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {sorted(_DIRECTIONS)}")
        iat = int(time.time()) if issued_at is None else int(issued_at)
        # The compact canonical JSON [direction, iat, bound_to, [values...]], assembled
        # directly: the same bytes json.dumps(separators=(",", ":")) gives, 4x faster.
        text = f'["{direction}",{iat},{_dumps(bound_to)},[{",".join(map(_encode_json, values))}]]'
        body = _VERSION_BYTE + text.encode("utf-8")
        if self._aeads:
            nonce = os.urandom(_NONCE_SIZE)
            sealed = self._aeads[0].encrypt(nonce, body[1:], _VERSION_BYTE)
            body = _VERSION_BYTE + nonce + sealed
        elif self._macs:
            mac = self._macs[0].copy()
            mac.update(body)
            body += mac.digest()[:_TAG_SIZE]
        return _b64encode(body)

    def decode(self, text: str, *, bound_to: str, n_values: int) -> Cursor:
        """Verify and decode ``text``; any failure raises :class:`InvalidCursor`."""
        bad = self.error
        if not text or len(text) > self.max_length:
            raise bad("malformed")
        try:
            raw = _b64decode(text)
        except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
            raise bad("malformed") from None
        if raw[:1] != _VERSION_BYTE:
            raise bad("version" if raw else "malformed")
        if self._aeads:
            body = self._open(raw)
        elif self._macs:
            body, tag = raw[:-_TAG_SIZE], raw[-_TAG_SIZE:]
            if len(body) < 2 or not self._verify(body, tag):
                raise bad("signature")
        else:
            body = raw
        try:
            doc = body[1:].decode("utf-8")
            payload, end = _raw_decode(doc)
            if end != len(doc):
                raise ValueError("trailing data")
            direction, iat, bound, raw_values = payload
            if (
                direction not in _DIRECTIONS
                or type(iat) is not int
                or iat < 0
                or type(bound) is not str
                or type(raw_values) is not list
            ):
                raise ValueError("bad payload")
            values = tuple(map(_decode_fast, raw_values))
        except (ValueError, TypeError, RecursionError, ArithmeticError, UnicodeError):
            # ValueError covers JSONDecodeError and unpacking a payload of the wrong size;
            # ArithmeticError covers decimal.InvalidOperation.
            raise bad("malformed") from None
        if not hmac.compare_digest(bound, bound_to) or len(values) != n_values:
            raise bad("mismatch")
        if self.max_age is not None and not (
            -60 <= time.time() - iat <= self.max_age  # one minute of clock skew
        ):
            raise bad("expired")
        return Cursor(values, direction, bound, iat)

    def _verify(self, body: bytes, tag: bytes) -> bool:
        for mac0 in self._macs:  # the first key signs, every key verifies (rotation)
            mac = mac0.copy()
            mac.update(body)
            if hmac.compare_digest(mac.digest()[:_TAG_SIZE], tag):
                return True
        return False

    def _open(self, raw: bytes) -> bytes:
        nonce, sealed = raw[1 : 1 + _NONCE_SIZE], raw[1 + _NONCE_SIZE :]
        if len(sealed) <= _TAG_SIZE:
            raise self.error("signature")
        for aead in self._aeads:
            try:
                return _VERSION_BYTE + bytes(aead.decrypt(nonce, sealed, _VERSION_BYTE))
            except self._invalid_tag:  # another key's cursor, or tampered: try the next key
                continue
        raise self.error("signature")

    def error(self, reason: str) -> InvalidCursor:
        """The 400 to raise for a cursor rejected for ``reason`` (a fixed word)."""
        return InvalidCursor(reason, param=self.param)
