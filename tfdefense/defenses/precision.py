"""Compute precision of the trainable defenses' train steps: "fp32", or "bf16" (bfloat16 compute, float32 state).

`compute_precision(models, precision)` is the context a `DefenseModel`'s `train_step` and `test_step`
run in (`DefenseModel.step_scope`): the models' layers compute in bfloat16 while the step is
traced; variables, optimizer state, losses and every call outside the step (inference, `purify`,
save, export) stay float32.
"""

import contextlib

import keras

from tfdefense._validation import check_choice
from tfdefense.inference import all_layers

PRECISIONS = ("fp32", "bf16")


def check_precision(precision):
    return check_choice("precision", precision, PRECISIONS)


@contextlib.contextmanager
def compute_precision(models, precision):
    """While the block runs, the layers of `models` whose policy is plain "float32" compute in bfloat16.

    With precision "bf16" each such layer gets the `mixed_bfloat16` policy
    (float32 variables, read as bfloat16; BatchNormalization keeps its
    statistics in float32) and gets its own policy back on exit. Graphs traced
    inside the block (a `train_step`) keep the bfloat16 ops; calls outside it
    (inference, export) run in float32. Layers with another policy (mixed,
    float16, quantized) are left as they are. "fp32" changes nothing.
    """
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    mixed = keras.dtype_policies.DTypePolicy("mixed_bfloat16")
    saved = {}
    try:
        for model in models:
            if model is None:
                continue
            for layer in all_layers(model):
                policy = getattr(layer, "dtype_policy", None)
                if id(layer) in saved or type(policy) not in (
                    keras.dtype_policies.DTypePolicy,
                    keras.dtype_policies.FloatDTypePolicy,
                ):
                    continue
                if policy.name == "float32":
                    saved[id(layer)] = (layer, policy)
                    layer.dtype_policy = mixed
        yield
    finally:
        for layer, policy in saved.values():
            layer.dtype_policy = policy
