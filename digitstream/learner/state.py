"""A learner's full state as plain data: hyper-parameters, sample count and numpy arrays (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .params import HyperParameters

STATE_FORMAT = 1


@dataclass
class LearnerState:
    """Everything needed to continue learning exactly: arrays (bit for bit) and JSON-able meta."""

    params: HyperParameters
    n_samples: int
    arrays: dict[str, np.ndarray] = field(repr=False)

    def meta(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "params": self.params.to_json(), "n_samples": self.n_samples}
