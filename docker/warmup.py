"""Compiles the learner's numba kernels once at image build time, so containers start learning at once.

numba caches compiled machine code in NUMBA_CACHE_DIR (set in the Dockerfile); a container whose CPU
differs from the build machine's just compiles again on first use.
"""

from __future__ import annotations

import numpy as np

from digitstream.learner import HyperParameters, new_learner


def main() -> None:
    images = np.zeros((4, 784), dtype=np.uint8)
    labels = np.arange(4, dtype=np.int64)
    for rule in ("seed", "softmax", "mlp"):
        learner = new_learner(HyperParameters.for_rule(rule))
        learner.learn_many(images, labels)
        learner.predict_proba_many(images)
        learner.predict_many(images)
    print("numba kernels compiled and cached")


if __name__ == "__main__":
    main()
