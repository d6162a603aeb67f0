"""Hyper-parameters of the two delta rules, validated once and carried in snapshot metadata."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Rule = Literal["seed", "softmax"]
Schedule = Literal["constant", "inverse_scaling"]

RULES: tuple[Rule, ...] = ("seed", "softmax")
SCHEDULES: tuple[Schedule, ...] = ("constant", "inverse_scaling")


@dataclass(frozen=True)
class HyperParameters:
    """What defines a learner's behaviour; two learners with equal parameters learn identically.

    ``seed`` is the original post's algorithm: raw pixels 0..255, identity output, no bias,
    constant rate 1e-7, rows initialised to 0.0001 * k. ``softmax`` is the generalised delta rule
    for a softmax output (multinomial logistic regression by SGD): pixels scaled to [0, 1], a bias,
    rate ``learning_rate / (1 + t / decay) ** power`` for the update numbered ``t`` (0-based), and
    optionally Polyak averaging of the weights that are served, iterate ``t`` weighted by
    ``t ** average_power`` (0 is the plain mean). The defaults were chosen on one in-order pass over
    the first 22,699 MNIST training images (see ``benchmarks/learners.py``).
    """

    rule: Rule = "softmax"
    learning_rate: float = 0.05
    schedule: Schedule = "inverse_scaling"
    decay: float = 3000.0
    power: float = 0.5
    averaging: bool = True
    average_power: float = 2.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("learning_rate", "decay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("power", "average_power"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def for_rule(cls, rule: Rule, **overrides: Any) -> HyperParameters:
        """The defaults of ``rule`` with some fields replaced (``None`` values are ignored)."""
        base = SEED if rule == "seed" else SOFTMAX
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(base, **given)

    @property
    def uses_bias(self) -> bool:
        return self.rule == "softmax"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HyperParameters:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown hyper-parameters: {', '.join(sorted(unknown))}")
        return cls(**data)


SEED = HyperParameters(
    rule="seed", learning_rate=1e-7, schedule="constant", decay=1.0, power=0.0, averaging=False, average_power=0.0
)
SOFTMAX = HyperParameters()
