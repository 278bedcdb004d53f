"""One context for computing in a lower precision: the float32 layers of some models, switched for a while.

`mixed_compute(models, compute_dtype)` gives every layer whose policy is plain "float32" the mixed
policy of `compute_dtype` ("bfloat16" -> `mixed_bfloat16`, "float16" -> `mixed_float16`: float32
variables read in the lower precision, BatchNormalization statistics kept in float32) and gives each
its own policy back on exit. Graphs traced inside the block (an attack's program, a `train_step`)
keep the lower-precision ops; calls outside it run in float32. Layers with another policy (mixed,
float16, quantized) are left as they are. `compute_dtype` None or "float32" changes nothing.
"""

import contextlib

from tfdefense.inference import all_layers

MIXED_POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@contextlib.contextmanager
def mixed_compute(models, compute_dtype):
    if compute_dtype in (None, "float32"):
        yield
        return
    import keras

    mixed = keras.dtype_policies.DTypePolicy(MIXED_POLICIES[compute_dtype])
    plain = (keras.dtype_policies.DTypePolicy, keras.dtype_policies.FloatDTypePolicy)
    saved = {}
    try:
        for model in models:
            if model is None:
                continue
            for layer in all_layers(model):
                policy = getattr(layer, "dtype_policy", None)
                if id(layer) not in saved and type(policy) in plain and policy.name == "float32":
                    saved[id(layer)] = (layer, policy)
                    layer.dtype_policy = mixed
        yield
    finally:
        for layer, policy in saved.values():
            layer.dtype_policy = policy
