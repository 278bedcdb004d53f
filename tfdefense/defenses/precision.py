"""Compute precision of the trainable defenses' train steps: "fp32", or "bf16" (bfloat16 compute, float32 state).

`compute_precision(models, precision)` is the context a `DefenseModel`'s `train_step` and `test_step`
run in (`DefenseModel.step_scope`): the models' layers compute in bfloat16 while the step is
traced; variables, optimizer state, losses and every call outside the step (inference, `purify`,
save, export) stay float32.
"""

import contextlib

from tfdefense._mixed_precision import mixed_compute
from tfdefense._validation import check_choice

PRECISIONS = ("fp32", "bf16")


def check_precision(precision):
    return check_choice("precision", precision, PRECISIONS)


@contextlib.contextmanager
def compute_precision(models, precision):
    """While the block runs, the layers of `models` whose policy is plain "float32" compute in bfloat16
    ("bf16": `mixed_compute(models, "bfloat16")`); "fp32" changes nothing."""
    check_precision(precision)
    with mixed_compute(models, None if precision == "fp32" else "bfloat16"):
        yield
