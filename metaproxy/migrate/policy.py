"""Policies: the ``ufsMigrate(...)`` and ``cacheLoad(...)`` expressions and where they are kept.

A policy names a path (a mount path such as ``/tpcds/store_sales``) and an expression::

    ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)
    cacheLoad(newerThan(7d), pinFor(1d))

``ufsMigrate`` moves units (the migration loop):

* conditions — ``olderThan(d)``: no file of the unit modified for ``d``; ``unusedFor(d)``: no
  read of the unit through the gateway for ``d``. Several conditions are joined with ``&``
  (all must hold). Durations: ``500ms``, ``30s``, ``1m``, ``2h``, ``7d``.
* actions — ``UFS[x]:STORE`` copies the unit to UFS ``x``; ``UFS[x]:REMOVE`` deletes it from
  ``x`` once the unit has flipped and the grace period has passed.

``cacheLoad`` pre-fetches (the gateway, from the metastore's notification log): when an event
says files were added under the path (a new partition, an insert), the gateway loads them into
its cache at once — before the first query asks for them.

* condition — ``newerThan(d)``: only files modified within ``d`` (an old partition registered
  again is not loaded);
* option — ``pinFor(d)``: keep what was loaded pinned for ``d``.

:func:`parse_policy` turns an expression into a :class:`PolicyExpr` or raises
:class:`PolicyError`, whose message points at the offending token with a caret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from metaproxy.config import parse_duration
from metaproxy.state import StateDB
from metaproxy.state.policies import PolicyExists, delete_policy, insert_policy, list_policies
from metaproxy.uri import SCHEME_ALIASES

__all__ = ["PolicyError", "PolicyExpr", "add_policy", "list_policies", "parse_policy", "remove_policy"]

KNOWN_UFS = ("hdfs", "s3")
ACTIONS = ("ufsMigrate", "cacheLoad")
#: the conditions each action takes
CONDITIONS = {"ufsMigrate": ("olderThan", "unusedFor"), "cacheLoad": ("newerThan",)}
OPERATIONS = ("STORE", "REMOVE")

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<duration>\d+(?:\.\d+)?[a-z]*)|(?P<punct>[()\[\]:,&]))"
)


class PolicyError(ValueError):
    """A malformed policy expression; the message shows where."""

    def __init__(self, expr: str, pos: int, message: str) -> None:
        self.expr, self.pos = expr, pos
        super().__init__(f"{message}\n  {expr}\n  {' ' * pos}^")


@dataclass(frozen=True)
class Condition:
    kind: str  # "olderThan" | "unusedFor"
    seconds: float

    def __str__(self) -> str:
        return f"{self.kind}({_fmt_duration(self.seconds)})"


@dataclass(frozen=True)
class PolicyExpr:
    """A parsed policy: the conditions a unit must meet and the UFS to store to / remove from."""

    action: str
    conditions: tuple[Condition, ...]
    store: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    #: cacheLoad: how long loaded files stay pinned (0: not pinned)
    pin_s: float = 0.0

    def __str__(self) -> str:
        parts = [" & ".join(str(c) for c in self.conditions)]
        parts += [f"UFS[{u}]:REMOVE" for u in self.remove]
        parts += [f"UFS[{u}]:STORE" for u in self.store]
        if self.pin_s:
            parts.append(f"pinFor({_fmt_duration(self.pin_s)})")
        return f"{self.action}({', '.join(parts)})"

    @property
    def migrates(self) -> bool:
        return self.action == "ufsMigrate"

    def newer_than(self) -> float | None:
        """cacheLoad's window in seconds (None: any age)."""
        return next((c.seconds for c in self.conditions if c.kind == "newerThan"), None)


def _fmt_duration(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{int(s * 1000)}ms"


class _Tokens:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.items: list[tuple[str, str, int]] = []  # (kind, text, position)
        pos = 0
        while pos < len(expr):
            if expr[pos:].strip() == "":
                break
            m = _TOKEN_RE.match(expr, pos)
            if m is None or m.end() == pos:
                at = pos + (len(expr[pos:]) - len(expr[pos:].lstrip()))
                raise PolicyError(expr, at, f"unexpected character {expr[at]!r}")
            kind = m.lastgroup or ""
            self.items.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        if self.i < len(self.items):
            return self.items[self.i]
        return ("end", "", len(self.expr))

    def take(self, kind: str, text: str | None = None, what: str = "") -> tuple[str, str, int]:
        tok = self.peek()
        if tok[0] != kind or (text is not None and tok[1] != text):
            expected = what or repr(text) if text else what or kind
            got = "the end of the policy" if tok[0] == "end" else repr(tok[1])
            raise PolicyError(self.expr, tok[2], f"expected {expected}, got {got}")
        self.i += 1
        return tok


def parse_policy(expr: str) -> PolicyExpr:
    """Parse ``ufsMigrate(cond [& cond…], UFS[x]:OP, …)`` or ``cacheLoad(newerThan(d)[, pinFor(d)])``;
    raises :class:`PolicyError`."""
    t = _Tokens(expr)
    _, action, apos = t.take("name", what="an action such as ufsMigrate")
    if action not in ACTIONS:
        raise PolicyError(expr, apos, f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    t.take("punct", "(")
    conditions = _conditions(t, action)
    store: list[str] = []
    remove: list[str] = []
    pin_s = 0.0
    while t.peek()[1] == ",":
        t.i += 1
        if action == "cacheLoad":
            if pin_s:
                raise PolicyError(expr, t.peek()[2], "pinFor appears twice")
            pin_s = _pin_for(t)
        else:
            _store_or_remove(t, store, remove)
    tok = t.peek()
    if tok[1] != ")":
        got = "the end of the policy" if tok[0] == "end" else repr(tok[1])
        raise PolicyError(expr, tok[2], f"expected ',' or ')', got {got}")
    t.i += 1
    end = t.peek()
    if end[0] != "end":
        raise PolicyError(expr, end[2], f"unexpected {end[1]!r} after the policy")
    if action == "ufsMigrate" and not store:
        raise PolicyError(expr, len(expr), "a migration needs a UFS[x]:STORE target")
    return PolicyExpr(action, tuple(conditions), tuple(store), tuple(remove), pin_s)


def _duration(t: _Tokens, what: str) -> tuple[float, int]:
    """``(d)`` after a name: the seconds and where the duration stood."""
    t.take("punct", "(")
    kind, text, dpos = t.peek()
    if kind != "duration":
        raise PolicyError(t.expr, dpos, "expected a duration such as 30s, 1m, 2h or 7d")
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise PolicyError(t.expr, dpos, f"{text!r} is not a duration (30s, 1m, 2h, 7d)") from None
    t.i += 1
    t.take("punct", ")")
    return seconds, dpos


def _conditions(t: _Tokens, action: str) -> list[Condition]:
    known = CONDITIONS[action]
    conditions: list[Condition] = []
    while True:
        _, name, pos = t.take("name", what="a condition: " + " or ".join(f"{c}(d)" for c in known))
        if name not in known:
            raise PolicyError(
                t.expr, pos, f"unknown condition {name!r} for {action} (known: {', '.join(known)})"
            )
        seconds, dpos = _duration(t, name)
        if seconds <= 0 and name in ("unusedFor", "newerThan"):
            raise PolicyError(t.expr, dpos, f"{name} needs a positive duration")
        conditions.append(Condition(name, seconds))
        if t.peek()[1] != "&":
            return conditions
        t.i += 1


def _pin_for(t: _Tokens) -> float:
    _, word, wpos = t.take("name", what="pinFor(d)")
    if word != "pinFor":
        raise PolicyError(t.expr, wpos, f"expected pinFor(d), got {word!r}")
    seconds, dpos = _duration(t, word)
    if seconds <= 0:
        raise PolicyError(t.expr, dpos, "pinFor needs a positive duration")
    return seconds


def _store_or_remove(t: _Tokens, store: list[str], remove: list[str]) -> None:
    _, word, wpos = t.take("name", what="UFS[name]:STORE or UFS[name]:REMOVE")
    if word != "UFS":
        raise PolicyError(t.expr, wpos, f"expected UFS[name]:STORE or UFS[name]:REMOVE, got {word!r}")
    t.take("punct", "[")
    _, ufs, upos = t.take("name", what="a UFS name (hdfs or s3)")
    ufs = SCHEME_ALIASES.get(ufs.lower(), ufs.lower())
    if ufs not in KNOWN_UFS:
        raise PolicyError(t.expr, upos, f"unknown UFS {ufs!r} (known: {', '.join(KNOWN_UFS)})")
    t.take("punct", "]")
    t.take("punct", ":")
    _, op, opos = t.take("name", what="STORE or REMOVE")
    if op not in OPERATIONS:
        raise PolicyError(t.expr, opos, f"unknown operation {op!r} (known: STORE, REMOVE)")
    if ufs in store or ufs in remove:
        raise PolicyError(t.expr, upos, f"UFS[{ufs}] appears twice")
    (store if op == "STORE" else remove).append(ufs)


# --------------------------------------------------------------------------------------------
# stored policies


def add_policy(db: StateDB, name: str, path: str, expr: str) -> PolicyExpr:
    """Validate and store a policy; a policy of the same name is refused."""
    parsed = parse_policy(expr)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(f"policy name {name!r}: letters, digits, '.', '_', '-' (at most 64)")
    p = "/" + path.strip().strip("/")
    if p == "/" or any(s in ("", ".", "..") for s in p.strip("/").split("/")):
        raise ValueError(f"policy path {path!r}: expected a mount path such as /tpcds/store_sales")
    try:
        insert_policy(db, name, p, str(parsed))
    except PolicyExists:
        raise ValueError(f"a policy named {name!r} exists already (policy remove {name} first)") from None
    return parsed


def remove_policy(db: StateDB, name: str) -> None:
    if not delete_policy(db, name):
        raise ValueError(f"no policy named {name!r}")
