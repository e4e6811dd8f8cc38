"""The key format: ``gnk_<id>_<secret><crc32>``, recognisable offline.

Like GitHub's 2021 tokens, every part is ``[A-Za-z0-9]``, parts are joined by ``_`` (a
double click selects the whole key), and the last six characters are the CRC32 of
everything before them in base62. A secret scanner (or :func:`looks_like_key`) can
therefore tell a real key from a random string, and a typo is rejected before any
store lookup. The checksum is not a security feature: anyone can compute it.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_PREFIX",
    "KEY_ID_LENGTH",
    "SECRET_LENGTH",
    "ParsedKey",
    "checksum",
    "generate_key",
    "key_pattern",
    "looks_like_key",
    "parse_key",
    "validate_prefix",
]

BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DEFAULT_PREFIX: Final = "gnk"
#: 12 base62 characters: ~71 random bits, unique enough for a primary key (collisions retried).
KEY_ID_LENGTH: Final = 12
#: 32 base62 characters: ~190 random bits, far beyond brute force even from a leaked hash.
SECRET_LENGTH: Final = 32
CHECKSUM_LENGTH: Final = 6
# GitHub tells integrators to allow 255; anything longer is refused before any regex runs.
MAX_TOKEN_LENGTH: Final = 255

_PREFIX_RE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_B62 = "[0-9A-Za-z]"


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is lower-case ``[a-z0-9]`` words joined by ``_`` (≤ 16 chars)."""
    if not isinstance(prefix, str) or len(prefix) > 16 or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            "the key prefix must be 1-16 lower-case letters/digits, words joined by '_'"
        )
    return prefix


def key_pattern(prefix: str = DEFAULT_PREFIX) -> re.Pattern[str]:
    """A regex finding keys of ``prefix`` in text (for secret scanners and log redaction).

    Group 1 is the key id, group 2 the secret, group 3 the checksum; confirm a hit
    with :func:`looks_like_key`.
    """
    validate_prefix(prefix)
    return re.compile(
        rf"(?<![0-9A-Za-z_]){re.escape(prefix)}_({_B62}{{{KEY_ID_LENGTH}}})_"
        rf"({_B62}{{{SECRET_LENGTH}}})({_B62}{{{CHECKSUM_LENGTH}}})(?![0-9A-Za-z_])"
    )


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, rem = divmod(n, 62)
        out.append(BASE62[rem])
    return "".join(reversed(out))


def checksum(body: str) -> str:
    """The six-character base62 CRC32 of ``body`` (the key without its last six characters)."""
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


_INDEX: Final = {c: i for i, c in enumerate(BASE62)}


def _checksum_ok(body: str, given: str) -> bool:
    # Decoding the six given characters is cheaper than encoding the CRC.
    n = 0
    for ch in given:
        n = n * 62 + _INDEX[ch]
    return n == zlib.crc32(body.encode("ascii"))


def _random(n: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(n))


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """The parts of a well-formed key; ``secret`` never appears in ``repr``."""

    prefix: str
    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"ParsedKey(prefix={self.prefix!r}, key_id={self.key_id!r}, secret=<redacted>)"


def generate_key(prefix: str = DEFAULT_PREFIX, *, key_id: str | None = None) -> tuple[str, str]:
    """A new ``(token, key_id)``; the token is shown once and never stored."""
    kid = key_id or _random(KEY_ID_LENGTH)
    body = f"{prefix}_{kid}_{_random(SECRET_LENGTH)}"
    return body + checksum(body), kid


class _Parser:
    """Parses tokens of one prefix; the compiled pattern is built once."""

    __slots__ = ("_exact", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = validate_prefix(prefix)
        self._exact = re.compile(
            rf"{re.escape(prefix)}_({_B62}{{{KEY_ID_LENGTH}}})_({_B62}{{{SECRET_LENGTH}}})"
            rf"({_B62}{{{CHECKSUM_LENGTH}}})"
        )

    def parse(self, token: object) -> ParsedKey | None:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            return None
        m = self._exact.fullmatch(token)
        if m is None:
            return None
        # Not constant time on purpose: the checksum is public information.
        if not _checksum_ok(token[:-CHECKSUM_LENGTH], m.group(3)):
            return None
        return ParsedKey(self.prefix, m.group(1), m.group(2))


_DEFAULT_PARSER = _Parser(DEFAULT_PREFIX)


def parse_key(token: object, *, prefix: str = DEFAULT_PREFIX) -> ParsedKey | None:
    """Split a key into its parts, or ``None`` if its shape or checksum is wrong (offline)."""
    parser = _DEFAULT_PARSER if prefix == DEFAULT_PREFIX else _Parser(prefix)
    return parser.parse(token)


def looks_like_key(token: object, *, prefix: str = DEFAULT_PREFIX) -> bool:
    """True if ``token`` has the key shape and a valid checksum; no store is consulted.

    A ``True`` says nothing about whether the key exists or is still valid.
    """
    return parse_key(token, prefix=prefix) is not None
