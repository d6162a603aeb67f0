"""Reading typed values out of untrusted JSON: every error is a ``ContractError`` naming the field.

``get(data, "lag", optional(integer), "status")`` reads ``data["lag"]`` as an int or None and
raises ``ContractError("status.lag: expected an integer, got 'x'")`` otherwise. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

T = TypeVar("T")


class ContractError(ValueError):
    """JSON that does not follow a contract; the message names the offending field."""


REQUIRED: Any = object()
Parse = Callable[[Any, str], T]


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


INT64 = 2**63  # integers are kept to 64 bits, as most JSON readers do (orjson)


def integer(value: Any, where: str) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) < INT64:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not -INT64 <= value < INT64:
        raise ContractError(f"{where}: expected a 64-bit integer, got {show(value)}")
    return value


def number(value: Any, where: str) -> float:
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if math.isfinite(number):
            return number
    raise ContractError(f"{where}: expected a finite number, got {show(value)}")


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ContractError(f"{where}: expected a string, got {show(value)}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ContractError(f"{where}: expected true or false, got {show(value)}")
    return value


def optional(parse: Parse[T]) -> Parse[T | None]:
    return lambda value, where: None if value is None else parse(value, where)


def array(parse: Parse[T]) -> Parse[tuple[T, ...]]:
    def parse_all(value: Any, where: str) -> tuple[T, ...]:
        if not isinstance(value, list | tuple):
            raise ContractError(f"{where}: expected an array, got {show(value)}")
        return tuple(parse(item, f"{where}[{i}]") for i, item in enumerate(value))

    return parse_all


def json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ContractError(f"{where}: expected an object, got {show(value)}")
    return dict(value)


def get(data: Mapping[str, Any], name: str, parse: Parse[T], where: str, default: Any = REQUIRED) -> T:
    if name not in data:
        if default is REQUIRED:
            raise ContractError(f"{where}: lacks {name!r}")
        return cast(T, default)
    return parse(data[name], f"{where}.{name}")
