"""A static check that refuses JSON Schema ``pattern`` regexes prone to catastrophic backtracking.

Python's ``re`` backtracks, so a pattern such as ``(a+)+$`` takes exponential time on
``"aaaa…!"``. Rather than timing matches out (impossible with ``re``), a template's
patterns are parsed once at publish time and refused when they have a shape that can
backtrack badly. The rule (documented in docs/workflow_templates.md):

1. at most ``MAX_PATTERN_LENGTH`` characters, and it compiles with Python's ``re``;
2. no backreferences, conditionals or inline flags (they are not portable JSON Schema
   regexes anyway);
3. star height 1: a repetition that may match more than once (``*``, ``+``, ``{2,}``) must
   not contain another variable repetition or an alternation: ``(a+)+``, ``(a|ab)*`` and
   ``(\\w+\\s?)*`` are refused, ``(\\.gz)?`` and ``(ab)+`` are fine;
4. two variable repetitions that can match the same character must be separated by
   something they cannot match: ``\\d+\\.\\d+`` is fine, ``a*a*`` and ``\\w+.\\w+`` are refused;
5. at most ``MAX_ALTERNATIONS`` alternations.

This is a conservative heuristic, so strings checked against a pattern are also capped in
length at validation time (``max_pattern_input``), which bounds whatever polynomial
backtracking the rule lets through.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

# The stdlib's own regex parser (private but stable since 3.11): parsing with it means
# the check sees exactly the syntax tree ``re`` will execute.
c: Any = importlib.import_module("re._constants")
p: Any = importlib.import_module("re._parser")

__all__ = ["MAX_ALTERNATIONS", "MAX_PATTERN_LENGTH", "UnsafePattern", "check_pattern"]

MAX_PATTERN_LENGTH = 256
MAX_ALTERNATIONS = 8

# Characters are modelled as code points plus three synthetic ones standing for the
# non-ASCII members of \w (and \d), of \s, and of neither: Unicode classes overlap
# exactly as these regions do, without enumerating Unicode.
_NA_WORD, _NA_SPACE, _NA_OTHER = 0x110000, 0x110001, 0x110002
_MAXCHAR = _NA_OTHER
Ranges = tuple[tuple[int, int], ...]
_ALL: Ranges = ((0, _MAXCHAR),)
_NONE: Ranges = ()
_NON_ASCII_REGIONS = (_NA_WORD, _NA_OTHER)
_CATEGORIES: dict[Any, Ranges] = {
    c.CATEGORY_DIGIT: ((0x30, 0x39), (_NA_WORD, _NA_WORD)),
    c.CATEGORY_WORD: ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A), (_NA_WORD, _NA_WORD)),
    c.CATEGORY_SPACE: ((0x09, 0x0D), (0x1C, 0x20), (_NA_SPACE, _NA_SPACE)),
}
_NEGATED_CATEGORIES = {
    c.CATEGORY_NOT_DIGIT: c.CATEGORY_DIGIT,
    c.CATEGORY_NOT_WORD: c.CATEGORY_WORD,
    c.CATEGORY_NOT_SPACE: c.CATEGORY_SPACE,
}
_REPEATS = {c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)}


class UnsafePattern(ValueError):
    """A pattern was refused; the message says which rule it breaks (without quoting it)."""


def _normalize(ranges: list[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(ranges: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    start = 0
    for lo, hi in ranges:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _MAXCHAR:
        out.append((start, _MAXCHAR))
    return tuple(out)


def _union(a: Ranges, b: Ranges) -> Ranges:
    return _normalize([*a, *b])


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo1, hi1 in a:
        for lo2, hi2 in b:
            lo, hi = max(lo1, lo2), min(hi1, hi2)
            if lo <= hi:
                out.append((lo, hi))
    return _normalize(out)


def _category(cat: Any) -> Ranges:
    if cat in _CATEGORIES:
        return _CATEGORIES[cat]
    if cat in _NEGATED_CATEGORIES:
        return _complement(_CATEGORIES[_NEGATED_CATEGORIES[cat]])
    return _ALL


def _literal(lo: int, hi: int) -> Ranges:
    # A non-ASCII literal may be a word, space or other character: over-approximate.
    if hi >= 0x80:
        return _normalize([(lo, hi), _NON_ASCII_REGIONS])
    return ((lo, hi),)


def _in_set(items: list[tuple[Any, Any]]) -> Ranges:
    negate = False
    raw: list[tuple[int, int]] = []
    for op, av in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            raw.append((av, av))
        elif op is c.RANGE:
            raw.append((av[0], av[1]))
        elif op is c.CATEGORY:
            raw.extend(_category(av))
        else:
            raw.append((0, _MAXCHAR))
    if negate:
        return _complement(_normalize(raw))
    out: list[tuple[int, int]] = []
    for lo, hi in raw:
        out.extend(_literal(lo, hi) if hi < _NA_WORD else ((lo, hi),))
    return _normalize(out)


class _Checker:
    def __init__(self) -> None:
        self.alternations = 0

    def chars(self, seq: Any) -> Ranges:
        """Every character ``seq`` may consume (over-approximated)."""
        acc: Ranges = _NONE
        for op, av in seq:
            acc = _union(acc, self.item_chars(op, av))
        return acc

    def item_chars(self, op: Any, av: Any) -> Ranges:
        if op is c.LITERAL:
            return _literal(av, av)
        if op is c.NOT_LITERAL:
            return _complement(((av, av),))
        if op is c.IN:
            return _in_set(av)
        if op is c.ANY:
            return _ALL
        if op in _REPEATS:
            return self.chars(av[2])
        if op is c.SUBPATTERN:
            return self.chars(av[3])
        if op is c.BRANCH:
            acc: Ranges = _NONE
            for alt in av[1]:
                acc = _union(acc, self.chars(alt))
            return acc
        if op is getattr(c, "ATOMIC_GROUP", None):
            return self.chars(av)
        return _NONE  # anchors and lookaround consume nothing

    def edge_chars(self, seq: Any, *, last: bool) -> tuple[Ranges, bool]:
        """Characters the first (or last) consumed character of ``seq`` may be, and whether
        ``seq`` may match the empty string (both over-approximated)."""
        acc: Ranges = _NONE
        items = list(seq)
        for op, av in reversed(items) if last else items:
            if op in _REPEATS:
                chars, empty = self.edge_chars(av[2], last=last)
                empty = empty or av[0] == 0
            elif op is c.SUBPATTERN:
                chars, empty = self.edge_chars(av[3], last=last)
            elif op is c.BRANCH:
                chars, empty = _NONE, False
                for alt in av[1]:
                    alt_chars, alt_empty = self.edge_chars(alt, last=last)
                    chars, empty = _union(chars, alt_chars), empty or alt_empty
            elif op is c.AT or op in (c.ASSERT, c.ASSERT_NOT):
                chars, empty = _NONE, True
            else:
                chars, empty = self.item_chars(op, av), False
            acc = _union(acc, chars)
            if not empty:
                return acc, False
        return acc, True

    def has_variable_part(self, seq: Any) -> bool:
        for op, av in seq:
            if op in _REPEATS and (av[1] != av[0] or self.has_variable_part(av[2])):
                return True
            if op is c.BRANCH:
                return True
            if op is c.SUBPATTERN and self.has_variable_part(av[3]):
                return True
            if op in (c.ASSERT, c.ASSERT_NOT) and self.has_variable_part(av[1]):
                return True
        return False

    def walk(self, seq: Any, live: Ranges) -> Ranges:
        """Check ``seq``; ``live`` holds the characters an earlier variable repetition
        could still take, i.e. could steal from the next one. Returns the new ``live``."""
        for op, av in seq:
            if op in (c.GROUPREF, c.GROUPREF_EXISTS):
                raise UnsafePattern("backreferences and conditionals are not allowed")
            if op in _REPEATS:
                low, high, body = av
                body_chars = self.chars(body)
                if high > 1 and self.has_variable_part(body):
                    raise UnsafePattern(
                        "a repeated group contains another repetition or an alternation "
                        "(nested quantifiers backtrack exponentially)"
                    )
                if high == low:
                    live = self.walk(body, live)
                    continue
                # Who takes the next character: the earlier repetition or this one?
                if _intersect(live, self.edge_chars(body, last=False)[0]):
                    raise UnsafePattern(
                        "two repetitions can match the same characters with nothing "
                        "between them to tell them apart"
                    )
                if high == 1:
                    # An optional part: the match either skips it or goes through it.
                    live = _union(
                        _union(live, self.walk(body, live)), self.edge_chars(body, last=True)[0]
                    )
                else:
                    live = _union(live, body_chars) if low == 0 else body_chars
            elif op is c.SUBPATTERN:
                if av[1] or av[2]:
                    raise UnsafePattern("inline flags are not allowed")
                live = self.walk(av[3], live)
            elif op is c.BRANCH:
                self.alternations += 1
                if self.alternations > MAX_ALTERNATIONS:
                    raise UnsafePattern(f"more than {MAX_ALTERNATIONS} alternations")
                out: Ranges = _NONE
                for alt in av[1]:
                    out = _union(out, self.walk(alt, live))
                live = out
            elif op in (c.ASSERT, c.ASSERT_NOT):
                self.walk(av[1], _NONE)
            elif op is getattr(c, "ATOMIC_GROUP", None):
                live = self.walk(av, live)
            elif op is c.AT:
                continue
            else:
                # A mandatory single character: only the characters it shares with the
                # live set stay ambiguous after it.
                live = _intersect(live, self.item_chars(op, av))
        return live


def check_pattern(pattern: str) -> None:
    """Raise :class:`UnsafePattern` when ``pattern`` breaks the rule in this module's docstring."""
    if not isinstance(pattern, str):
        raise UnsafePattern("a pattern must be a string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePattern(f"a pattern may have at most {MAX_PATTERN_LENGTH} characters")
    try:
        parsed = p.parse(pattern)
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise UnsafePattern("not a valid regular expression") from exc
    if parsed.state.flags & ~(c.SRE_FLAG_UNICODE):
        raise UnsafePattern("inline flags are not allowed")
    _Checker().walk(parsed, _NONE)
