"""Bounded vocabularies of what the worker reports and the service exports: dead-letter reason classes,
learning-health states, and the cumulative counts that carry them across processes.

Label values of a Prometheus series must come from a small fixed set, or one hostile stream entry
could create a series per distinct reason. A dead letter's reason is free text (it quotes the
problem); ``deadletter_class`` maps it onto ``DEADLETTER_CLASSES``. Fault kinds are the worker's own
words, mapped onto ``FAULT_KINDS`` the same way. Standard library only.

>>> deadletter_class("pixels: expected 784 values (or 28x28), got shape [3]")
'pixels'
>>> deadletter_class("entry too large: 20000000 bytes (limit 65536)")
'size'
>>> deadletter_class("something new")
'other'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from .jsonfields import ContractError, integer, json_object, show

DEADLETTER_CLASSES: tuple[str, ...] = (
    "pixels", "label", "size", "fields", "origin", "internal", "diverged", "other",
)  # fmt: skip
FAULT_KINDS: tuple[str, ...] = ("redis", "divergence", "restart", "internal", "other")

# ok: an active worker is learning (heartbeat fresh). stalled: a worker holds the lease but its
# heartbeat is stale (stuck, or killed and its lease not yet expired). no-worker: nobody holds the
# lease. crash-looping: the worker restarts at the same position again and again (it says so).
# unknown: Redis is unreachable, so the service cannot tell.
Health = Literal["ok", "stalled", "no-worker", "crash-looping", "unknown"]
HEALTH_STATES: tuple[str, ...] = get_args(Health)

_PREFIXES = (
    ("pixels", "pixels"), ("label", "label"), ("entry too large", "size"), ("missing field", "fields"),
    ("too many fields", "fields"), ("field", "fields"), ("producer", "origin"), ("seq", "origin"),
    ("internal error", "internal"), ("diverged", "diverged"),
)  # fmt: skip
MAX_COUNT_KEYS = 32


def deadletter_class(reason: str) -> str:
    """The class (one of ``DEADLETTER_CLASSES``) of a dead letter's reason text."""
    text = reason.lstrip().lower()
    for prefix, name in _PREFIXES:
        if text.startswith(prefix):
            return name
    return "other"


def fault_kind(kind: str) -> str:
    """The exported kind (one of ``FAULT_KINDS``) of a fault's ``kind``."""
    return kind if kind in FAULT_KINDS else "other"


def counts(value: Any, where: str) -> dict[str, int]:
    """A JSON object of non-negative integer counts with at most ``MAX_COUNT_KEYS`` short keys."""
    d = json_object(value, where)
    if len(d) > MAX_COUNT_KEYS:
        raise ContractError(f"{where}: at most {MAX_COUNT_KEYS} keys, got {len(d)}")
    out: dict[str, int] = {}
    for key, raw in d.items():
        n = integer(raw, f"{where}.{key}")
        if n < 0 or len(key) > 64:
            raise ContractError(f"{where}.{show(key)}: expected a count >= 0, got {show(raw)}")
        out[key] = n
    return out


def add_count(total: Mapping[str, int], key: str, n: int = 1) -> dict[str, int]:
    """A copy of ``total`` with ``key`` counted ``n`` more times."""
    return {**total, key: total.get(key, 0) + n}


__all__ = [
    "DEADLETTER_CLASSES", "FAULT_KINDS", "HEALTH_STATES", "Health", "add_count", "counts", "deadletter_class",
    "fault_kind",
]  # fmt: skip
