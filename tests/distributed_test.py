"""tf.distribute end to end: MirroredStrategy over 2 logical CPUs and 2-process MultiWorkerMirroredStrategy.

The two-process runs: the cross-worker checks (default tier), `train classifier` through the CLI and the
whole package's multi-worker comparison (slow tier).

Logical devices and collective ops must be configured before TensorFlow starts,
so every scenario runs in fresh Python processes.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfdefense.distribute import free_local_ports

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
    c = generate(pgd_random, model, x_test, y_test, batch_size=16, progress=False)
    diffs["pgd_random_2_replicas_vs_none"] = float(np.max(np.abs(a - c)))
    out["pgd_random_linf"] = float(np.max(np.abs(a - x_test)))
    from tfdefense.evaluation.robustness import SuiteAttack, evaluate_robustness
    suite = [SuiteAttack("fgsm", "fgsm", dict(eps=0.2), "single-step"),
             SuiteAttack("pgd", "pgd", dict(eps=0.2, eps_iter=0.04, nb_iter=8, rand_init=False), "white-box", 2)]
    single = evaluate_robustness(model, x_test, y_test, suite, batch_size=32)
    sharded = evaluate_robustness(model, x_test, y_test, suite, batch_size=32, strategy=two)
    out["robustness"] = {"single": single.summary(), "sharded": sharded.summary(),
                         "same_outcomes": all(bool(np.array_equal(single.correct[k], sharded.correct[k]))
                                              for k in single.correct)}
    out["diffs"] = diffs
    print("RESULT " + json.dumps(out))
    """
)


def _run_script(script, args=(), env=None, timeout=600):
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = [li for li in result.stdout.splitlines() if li.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def test_mirrored_two_logical_cpus_trains_and_generates_like_one_device(tmp_path):
    out = _run_script(MIRRORED, [tmp_path / "cache"])
    assert out["replicas"] == 2 and out["describe"]["strategy"] == "mirrored", out
    # Model C has no batch norm: 2 replicas x 32 images give the gradient of the global batch of 64.
    np.testing.assert_allclose(out["losses"]["mirrored"], out["losses"]["none"], rtol=1e-4)
    np.testing.assert_allclose(
        out["losses"]["mirrored_train_classifier"], out["losses"]["none_train_classifier"], rtol=0.05
    )  # shuffled: the same images, batch order may differ under the strategy
    assert out["weights_max_diff"] < 1e-4, out
    for label in ("fgsm", "pgd"):
        assert out["diffs"][label] < 1e-5, out
        info = out[label + "_info"]
        assert info["cache"] == "miss" and info["num_examples"] == 90 and info["distribute"]["replicas"] == 2
        assert info["num_success"] == out[label + "_success_ref"] > 0, out
        assert out[label + "_cache_without_strategy"] == "hit", out  # the key does not hold the strategy
    assert out["diffs"]["pgd_random_2_vs_1_replica"] < 1e-5, out
    assert out["diffs"]["pgd_random_2_replicas_vs_none"] < 1e-5, out  # batch b draws from stream (seed, b)
    robustness = out["robustness"]
    assert robustness["same_outcomes"] and robustness["single"] == robustness["sharded"], robustness
    assert robustness["single"]["worst_case"] < robustness["single"]["clean"], robustness
    assert 0.29 < out["pgd_random_linf"] <= 0.3 + 1e-6, out


# One script, run as 2 workers of a MultiWorkerMirroredStrategy (TF_CONFIG per process) or as one process
# with a MirroredStrategy over 2 logical CPUs: the same replica layout (2 replicas, half of each global batch
# each, batch-norm statistics per replica), so the numbers must agree to float precision.
WORKER = textwrap.dedent(
    """
    import json, sys
    mode, out_path = sys.argv[1], sys.argv[2]
    import tensorflow as tf
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfdefense import _io, distribute
    strategy = distribute.make_strategy(mode)  # multiworker: before any other TF op
    import keras
    import numpy as np
    from tfdefense.attacks import generate, get_attack
    from tfdefense.data import load_dataset, make_paired_pipeline, make_pipeline
    from tfdefense.defenses import APEGAN, Pix2PixDefense, RobustPurifier
    from tfdefense.models import compile_classifier, model_c, patchgan_preset, unet_generator, unet_generator_preset

    (x, y), (x_test, y_test) = load_dataset("digits", image_size=28)
    x, y, x_test, y_test = x[:128], y[:128], x_test[:48], y_test[:48]
    out = {"describe": distribute.describe(strategy), "chief": distribute.is_chief(strategy)}

    def flat(history):
        return {k: [float(v) for v in vs] for k, vs in history.history.items()}

    keras.utils.set_random_seed(0)
    with strategy.scope():
        classifier = compile_classifier(model_c())
    out["classifier"] = flat(classifier.fit(make_pipeline(x, y, batch_size=32), epochs=2, verbose=0))
    classifier.trainable = False
    x_adv = generate(get_attack("fgsm", eps=0.3), classifier, x, y, batch_size=32, progress=False, strategy=strategy)
    pairs = lambda: make_paired_pipeline(x_adv, x, batch_size=32, shuffle=False)

    keras.utils.set_random_seed(1)
    with strategy.scope():
        apegan = APEGAN.from_preset("tiny")
        apegan.compile()
    out["apegan"] = flat(apegan.fit(pairs(), epochs=1, verbose=0))
    out["apegan_purified_sum"] = float(np.sum(apegan.purify(x_adv[:8])))

    keras.utils.set_random_seed(2)
    with strategy.scope():
        pix2pix = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"))
        pix2pix.compile()
    out["pix2pix"] = flat(pix2pix.fit(pairs(), epochs=1, verbose=0))
    out["pix2pix_purified_sum"] = float(np.sum(pix2pix.purify(x_adv[:8])))

    keras.utils.set_random_seed(3)
    with strategy.scope():
        generator = unet_generator((28, 28, 1), base_filters=8, max_filters=32, depth=3, dropout=0.0)
        robust = RobustPurifier(generator, classifier, attack_eps=0.2, attack_steps=2, seed=0)
        robust.compile()
    out["robust"] = flat(robust.fit(make_pipeline(x, y, batch_size=32), epochs=1, verbose=0))
    out["robust_purified_sum"] = float(np.sum(robust.purify(x_test[:8])))

    pgd = get_attack("pgd", eps=0.3, eps_iter=0.05, nb_iter=10, rand_init=True, seed=5)
    x_pgd, info = generate(pgd, classifier, x_test, y_test, batch_size=8, progress=False, strategy=strategy,
                           return_info=True)
    out["pgd_sum"] = float(np.sum(x_pgd))
    out["pgd_linf"] = float(np.max(np.abs(x_pgd - x_test)))
    out["pgd_num_success"] = info["num_success"]
    out["pgd_accuracy"] = float(np.mean(classifier.predict(x_pgd, verbose=0).argmax(-1) == y_test))
    import pathlib
    out_path = pathlib.Path(out_path)
    _io.write_json(distribute.worker_dir(out_path.parent, strategy) / out_path.name, out)  # the chief: out_path
    """
)


PIX2PIX_TWO_REPLICAS = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tfdefense.defenses import Pix2PixDefense
    from tfdefense.models import patchgan_preset, unet_generator_preset

    rng = np.random.default_rng(0)
    x_clean = rng.random((32, 28, 28, 1), dtype=np.float32)
    x_adv = np.clip(x_clean + rng.uniform(-0.3, 0.3, x_clean.shape), 0, 1).astype(np.float32)
    deltas = []
    for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            defense = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"))
            defense.compile(g_optimizer=keras.optimizers.SGD(1.0), d_optimizer=keras.optimizers.SGD(1.0))
        before = [np.array(v) for v in defense.generator.trainable_variables]
        defense.fit(tf.data.Dataset.from_tensor_slices((x_adv, x_clean)).batch(32), epochs=1, verbose=0)
        after = [np.array(v) for v in defense.generator.trainable_variables]
        deltas.append(np.concatenate([(a - b).ravel() for a, b in zip(after, before)]))
    one, two = deltas
    print("RESULT " + json.dumps({"norm_ratio": float(np.linalg.norm(two) / np.linalg.norm(one)),
                                  "cosine": float(one @ two / np.linalg.norm(one) / np.linalg.norm(two))}))
    """
)


def test_pix2pix_two_replicas_average_over_the_global_batch():
    # One SGD step on the same 32 images with 1 and 2 replicas (2 logical CPUs, in a
    # fresh process): the update has the same size when each replica's loss is
    # divided by the global batch (a per-replica mean would double it: ratio ~2).
    # Directions differ a little: batch-norm statistics are per replica.
    stats = _run_script(PIX2PIX_TWO_REPLICAS, timeout=300)
    assert 0.85 < stats["norm_ratio"] < 1.15 and stats["cosine"] > 0.5, stats


def _launch_workers(argv, num_workers=2, cwd=ROOT, timeout=1500):
    """Runs `argv` as `num_workers` processes of one localhost cluster (TF_CONFIG each); returns their outputs."""
    ports = free_local_ports(num_workers)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes = []
    for index in range(num_workers):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(
            subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=timeout)
            outputs.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for index, (code, _, stderr) in enumerate(outputs):
        assert code == 0, f"worker {index} exited with {code}:\n{stderr[-4000:]}"
    return outputs


def _assert_close(multi, single, path=""):
    if isinstance(single, dict):
        assert set(multi) == set(single), path
        for key in single:
            _assert_close(multi[key], single[key], f"{path}.{key}")
    elif isinstance(single, list):
        np.testing.assert_allclose(multi, single, rtol=1e-3, atol=1e-4, err_msg=path)
    elif isinstance(single, float):
        np.testing.assert_allclose(multi, single, rtol=1e-3, atol=1e-3, err_msg=path)
    else:
        assert multi == single, path


@pytest.mark.slow
def test_two_process_multiworker_matches_single_process(tmp_path):
    """2 worker processes on localhost train APE-GAN, pix2pix and RobustPurifier, generate PGD, run quickstart."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _launch_workers([sys.executable, str(script), "multiworker", str(tmp_path / "multi.json")])
    _run_script(
        WORKER.replace("mode, out_path = sys.argv[1], sys.argv[2]", 'mode, out_path = "mirrored", sys.argv[1]')
        + '\nprint("RESULT {}")\n',
        [tmp_path / "single.json"],
    )
    multi = json.loads((tmp_path / "multi.json").read_text())
    single = json.loads((tmp_path / "single.json").read_text())
    assert multi["describe"]["strategy"] == "multiworker" and multi["describe"]["workers"] == 2, multi["describe"]
    assert multi["describe"]["replicas"] == single["describe"]["replicas"] == 2
    assert (tmp_path / "workers" / "worker-1" / "multi.json").is_file()  # the other worker's copy, not the chief's
    worker = json.loads((tmp_path / "workers" / "worker-1" / "multi.json").read_text())
    assert not worker["chief"] and multi["chief"]
    for key in ("describe", "chief"):
        multi.pop(key), single.pop(key), worker.pop(key)
    _assert_close(worker, multi)  # both workers hold the same model
    _assert_close(multi, single)
    assert 0.29 < multi["pgd_linf"] <= 0.3 + 1e-6 and multi["pgd_accuracy"] < 0.5, multi

    # The CLI: tiny quickstart as 2 workers and as one process (2 logical CPUs) give the same table.
    cli = [sys.executable, "-m", "tfdefense.evaluate", "--preset", "quickstart", "--scale", "tiny", "--quiet"]
    _launch_workers(cli + ["--out", str(tmp_path / "qs-multi"), "--distribute", "multiworker"])
    assert not (tmp_path / "qs-multi" / "workers" / "worker-1" / "results.json").exists()  # only the chief reports
    one_process = textwrap.dedent(
        """
        import sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfdefense.evaluate import main
        code = main(sys.argv[1:])
        print("RESULT " + str(code))
        """
    )
    assert _run_script(one_process, cli[3:] + ["--out", tmp_path / "qs-single", "--distribute", "mirrored"]) == 0
    multi = json.loads((tmp_path / "qs-multi" / "results.json").read_text())
    single = json.loads((tmp_path / "qs-single" / "results.json").read_text())
    assert multi["environment"]["distribute"]["workers"] == 2 and multi["environment"]["distribute"]["replicas"] == 2
    assert any("2 replica(s) on 2 worker(s)" in note for note in multi["notes"])
    assert "multiworker" in (tmp_path / "qs-multi" / "report.md").read_text()
    key = lambda row: (row["table"], row["defense"], row["attack"], row["metric"], row["eval_mode"])  # noqa: E731
    rows_multi = {key(r): r["value"] for r in multi["rows"]}
    rows_single = {key(r): r["value"] for r in single["rows"]}
    assert rows_multi.keys() == rows_single.keys() and len(rows_multi) >= 8
    for k in rows_single:  # accuracies over 100 test digits: at most one image may flip on float noise
        assert abs(rows_multi[k] - rows_single[k]) <= 0.011, (k, rows_multi[k], rows_single[k])


# Each of 2 worker processes: the cross-worker checks on values that agree and values that differ.
COLLECTIVES = textwrap.dedent(
    """
    import json
    from tfdefense import distribute
    strategy = distribute.make_strategy("multiworker")
    index = distribute.task(strategy)[1]
    print("RESULT " + json.dumps({
        "index": index,
        "equal": distribute.all_workers_equal(strategy, 3),
        "unequal": distribute.all_workers_equal(strategy, index),
        "equal_fraction": distribute.all_workers_equal(strategy, 0.5),
        "agree": distribute.all_workers_agree(strategy, True),
        "disagree": distribute.all_workers_agree(strategy, index == 0),
    }))
    """
)


def _results(outputs):
    return [
        json.loads([li for li in stdout.splitlines() if li.startswith("RESULT ")][-1][len("RESULT ") :])
        for _, stdout, _ in outputs
    ]


def test_all_workers_equal_and_agree_across_two_processes():
    """tf.distribute.ReduceOp has no MAX: the checks gather every worker's value and compare (2 processes)."""
    results = _results(_launch_workers([sys.executable, "-c", COLLECTIVES], timeout=300))
    assert [r["index"] for r in results] == [0, 1]
    for result in results:
        assert result["equal"] and result["equal_fraction"] and result["agree"], result
        assert not result["unequal"] and not result["disagree"], result


@pytest.mark.slow
def test_two_process_multiworker_train_classifier_cli(tmp_path, mnist):
    """`TF_CONFIG=... python -m tfdefense.train classifier --distribute multiworker`, 2 workers on localhost.

    One epoch on 384 real digits (about 40 s wall time on 2 idle CPU cores, both workers included).
    """
    (x_train, y_train), (x_test, y_test) = mnist
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=x_train[:384], y_train=y_train[:384], x_test=x_test[:200], y_test=y_test[:200])
    out = tmp_path / "model_c.keras"
    outputs = _launch_workers(
        [
            sys.executable,
            "-m",
            "tfdefense.train",
            "classifier",
            "--model",
            "C",
            "--dataset",
            f"npz:{data}",
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--distribute",
            "multiworker",
            "--out",
            str(out),
        ],
        timeout=600,
    )
    printed = [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in outputs]
    assert [p["distribute"]["task"] for p in printed] == ["worker-0", "worker-1"]
    summary = json.loads(out.with_suffix(".json").read_text())  # written by the chief only
    assert summary == printed[0]
    assert summary["distribute"]["workers"] == 2 and summary["distribute"]["replicas"] == 2
    assert summary["train_examples"] == 384 and summary["epochs"] == 1 and summary["resumed_from_epoch"] == 0
    assert printed[1]["test_accuracy"] == summary["test_accuracy"] > 0.3  # one model on both workers; chance is 0.1
    import keras

    model = keras.models.load_model(out, safe_mode=True)
    predicted = model.predict(x_test[:200], verbose=0).argmax(-1)
    assert abs(float(np.mean(predicted == y_test[:200])) - summary["test_accuracy"]) < 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.npz", "model_c.json", "model_c.keras"]
