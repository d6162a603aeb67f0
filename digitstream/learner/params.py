"""Hyper-parameters of the learning rules, validated once and carried in snapshot metadata."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Rule = Literal["seed", "softmax", "mlp"]
Schedule = Literal["constant", "inverse_scaling"]

RULES: tuple[Rule, ...] = ("seed", "softmax", "mlp")
MLP_ONLY = ("hidden", "init_seed", "average_every")  # fields that mean something for the mlp rule only
MAX_HIDDEN = 4096
MAX_SEED = 2**63 - 1
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

    ``mlp`` is the generalised delta rule with one hidden layer (back-propagation): ``hidden`` ReLU
    units, a softmax output, the same rate schedule, weights initialised from ``init_seed``, and
    the served weights averaged every ``average_every`` samples (see ``mlp_kernels``). Its
    defaults were chosen on the prequential accuracy of that stream and on a held-out tail of it
    (docs/mlp.md). The three mlp-only fields are 0 / 0 / 1 for the linear rules, and left out of
    their JSON, so the snapshots written before the mlp rule existed read back equal.
    """

    rule: Rule = "softmax"
    learning_rate: float = 0.05
    schedule: Schedule = "inverse_scaling"
    decay: float = 3000.0
    power: float = 0.5
    averaging: bool = True
    average_power: float = 2.0
    hidden: int = 0
    init_seed: int = 0
    average_every: int = 1

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
        for name, low, high in (("hidden", 0, MAX_HIDDEN), ("init_seed", 0, MAX_SEED), ("average_every", 1, 10**9)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if self.rule == "mlp" and self.hidden < 1:
            raise ValueError("hidden must be >= 1 for the mlp rule")
        if self.rule != "mlp":
            given = [n for n, v in zip(MLP_ONLY, (self.hidden, self.init_seed, self.average_every), strict=True)
                     if v != (1 if n == "average_every" else 0)]  # fmt: skip
            if given:
                raise ValueError(f"{', '.join(given)} apply to the mlp rule only, not to {self.rule!r}")

    @classmethod
    def for_rule(cls, rule: Rule, **overrides: Any) -> HyperParameters:
        """The defaults of ``rule`` with some fields replaced (``None`` values are ignored)."""
        base = {"seed": SEED, "softmax": SOFTMAX, "mlp": MLP}.get(rule)
        if base is None:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(base, **given)

    @property
    def uses_bias(self) -> bool:
        return self.rule != "seed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.rule != "mlp":
            for name in MLP_ONLY:
                del data[name]
        return data

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
MLP = HyperParameters(
    rule="mlp", learning_rate=0.05, schedule="inverse_scaling", decay=2000.0, power=0.5, averaging=True,
    average_power=4.0, hidden=256, init_seed=0, average_every=25,
)  # fmt: skip
