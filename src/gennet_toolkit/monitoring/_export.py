"""Prometheus rule files, written as YAML without a YAML library."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.monitoring._rules import AlertRule, prom_duration

__all__ = ()

_GROUP_RE: Final = re.compile(r"[^\x00-\x1f\x7f]+")

# Characters YAML may hold unescaped in a double-quoted scalar: printable, and not a
# line break (U+0085, U+2028 and U+2029 are line breaks in YAML 1.1 and would be folded).
_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _printable(ch: str) -> bool:
    cp = ord(ch)
    if cp in (0x85, 0x2028, 0x2029, 0xFEFF):
        return False
    return (
        0x20 <= cp <= 0x7E
        or 0xA0 <= cp <= 0xD7FF
        or 0xE000 <= cp <= 0xFFFD
        or 0x10000 <= cp <= 0x10FFFF
    )


def quote(text: str) -> str:
    """A YAML double-quoted scalar that reads back as exactly ``text``."""
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif _printable(ch):
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _version(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", text)
    if not match:
        raise ConfigurationError(f"prometheus_version {text!r} must look like '2.42'")
    return int(match.group(1)), int(match.group(2))


def _mapping(lines: list[str], key: str, values: Mapping[str, str], indent: str) -> None:
    if not values:
        return
    lines.append(f"{indent}{key}:")
    for k, v in sorted(values.items()):
        lines.append(f"{indent}  {k}: {quote(v)}")


def rules_yaml(
    rules: Iterable[AlertRule],
    *,
    group: str = "gennet",
    interval: float | None = None,
    prometheus_version: str = "2.42",
) -> str:
    """The rule file text: one group holding one alerting rule per AlertRule."""
    if not _GROUP_RE.fullmatch(str(group)):
        raise ConfigurationError("rule group name must be a non-empty string without controls")
    version = _version(prometheus_version)
    lines = ["groups:", f"  - name: {quote(group)}"]
    if interval is not None:
        ms = interval * 1000
        if not ms > 0 or ms != round(ms):
            raise ConfigurationError("rule group interval must be > 0 whole milliseconds")
        lines.append(f"    interval: {prom_duration(round(ms))}")
    rule_list = list(rules)
    seen: set[str] = set()
    lines.append("    rules:" if rule_list else "    rules: []")
    for rule in rule_list:
        if rule.name in seen:
            raise ConfigurationError(f"two alert rules are named {rule.name!r}")
        seen.add(rule.name)
        lines.append(f"      - alert: {quote(rule.name)}")
        lines.append(f"        expr: {quote(rule.promql())}")
        if rule.for_seconds:
            lines.append(f"        for: {prom_duration(round(rule.for_seconds * 1000))}")
        if rule.keep_firing_for:
            if version < (2, 42):
                raise ConfigurationError(
                    f"alert rule {rule.name!r} uses keep_firing_for, which needs "
                    f"Prometheus >= 2.42 (exporting for {prometheus_version})"
                )
            lines.append(
                f"        keep_firing_for: {prom_duration(round(rule.keep_firing_for * 1000))}"
            )
        _mapping(lines, "labels", rule.all_labels, "        ")
        _mapping(lines, "annotations", rule.annotations, "        ")
    return "\n".join(lines) + "\n"


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` in one step, so Prometheus never reloads a half-written file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a prometheus user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
