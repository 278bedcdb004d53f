"""tf.distribute end to end: MirroredStrategy over 2 logical CPUs (fast) and 2-process MultiWorkerMirroredStrategy (slow).

Logical devices and collective ops must be configured before TensorFlow starts,
so every scenario runs in fresh Python processes.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

MIRRORED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tfdefense import distribute
    from tfdefense.attacks import generate, get_attack
    from tfdefense.data import load_dataset
    from tfdefense.data import make_pipeline
    from tfdefense.models import compile_classifier, model_c, train_classifier

    (x, y), (x_test, y_test) = load_dataset("digits", image_size=28)
    x, y, x_test, y_test = x[:256], y[:256], x_test[:90], y_test[:90]
    one = distribute.make_strategy("none")
    two = distribute.make_strategy("mirrored")
    out = {"replicas": two.num_replicas_in_sync, "describe": distribute.describe(two)}
    losses = {}
    models = {}
    for name, strategy in (("none", one), ("mirrored", two)):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = compile_classifier(model_c())
        history = model.fit(make_pipeline(x, y, batch_size=64), epochs=2, verbose=0)
        losses[name] = history.history["loss"]
        models[name] = model
        keras.utils.set_random_seed(0)
        with strategy.scope():
            fresh = model_c()
        history = train_classifier(fresh, x, y, epochs=1, batch_size=64, seed=0, verbose=0, strategy=strategy)
        losses[name + "_train_classifier"] = history.history["loss"]
    out["losses"] = losses
    out["weights_max_diff"] = max(float(np.max(np.abs(a - b))) for a, b in
                                  zip(models["none"].get_weights(), models["mirrored"].get_weights()))
    model = models["none"]
    cache = sys.argv[1]
    fgsm = get_attack("fgsm", eps=0.3)
    pgd = get_attack("pgd", eps=0.3, eps_iter=0.05, nb_iter=10, rand_init=False)
    pgd_random = get_attack("pgd", eps=0.3, eps_iter=0.05, nb_iter=10, rand_init=True, seed=7)
    diffs = {}
    for label, attack in (("fgsm", fgsm), ("pgd", pgd)):
        ref = generate(attack, model, x_test, y_test, batch_size=16, progress=False)
        dist, info = generate(attack, model, x_test, y_test, batch_size=16, progress=False, strategy=two,
                              cache_dir=cache, return_info=True)
        diffs[label] = float(np.max(np.abs(ref - dist)))
        out[label + "_info"] = {k: info[k] for k in ("cache", "num_success", "num_examples", "distribute")}
        again, info = generate(attack, model, x_test, y_test, batch_size=16, progress=False, cache_dir=cache,
                               return_info=True)
        out[label + "_cache_without_strategy"] = info["cache"]
        out[label + "_success_ref"] = int(np.sum(model.predict(ref, verbose=0).argmax(-1) != y_test))
    a = generate(pgd_random, model, x_test, y_test, batch_size=16, progress=False, strategy=two)
    b = generate(pgd_random, model, x_test, y_test, batch_size=16, progress=False,
                 strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    diffs["pgd_random_2_vs_1_replica"] = float(np.max(np.abs(a - b)))
    out["pgd_random_linf"] = float(np.max(np.abs(a - x_test)))
    out["diffs"] = diffs
    print("RESULT " + json.dumps(out))
    """
)


def _run_script(script, args=(), env=None, timeout=600):
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    line = [li for li in result.stdout.splitlines() if li.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_mirrored_two_logical_cpus_trains_and_generates_like_one_device(tmp_path):
    out = _run_script(MIRRORED, [tmp_path / "cache"])
    assert out["replicas"] == 2 and out["describe"]["strategy"] == "mirrored", out
    # Model C has no batch norm: 2 replicas x 32 images give the gradient of the global batch of 64.
    np.testing.assert_allclose(out["losses"]["mirrored"], out["losses"]["none"], rtol=1e-4)
    np.testing.assert_allclose(out["losses"]["mirrored_train_classifier"], out["losses"]["none_train_classifier"],
                               rtol=0.05)  # shuffled: the same images, batch order may differ under the strategy
    assert out["weights_max_diff"] < 1e-4, out
    for label in ("fgsm", "pgd"):
        assert out["diffs"][label] < 1e-5, out
        info = out[label + "_info"]
        assert info["cache"] == "miss" and info["num_examples"] == 90 and info["distribute"]["replicas"] == 2
        assert info["num_success"] == out[label + "_success_ref"] > 0, out
        assert out[label + "_cache_without_strategy"] == "hit", out  # the key does not hold the strategy
    assert out["diffs"]["pgd_random_2_vs_1_replica"] < 1e-5, out
    assert 0.29 < out["pgd_random_linf"] <= 0.3 + 1e-6, out
