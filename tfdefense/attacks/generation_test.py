"""Batched generation and the on-disk cache."""

import json
import shutil
import warnings

import keras
import numpy as np
import pytest

from tfdefense.attacks import generate, get_attack, model_fingerprint
from tfdefense.attacks.generation import cache_key


@pytest.fixture(scope="module")
def data(mnist_eval_batch):
    return mnist_eval_batch[0][:60], mnist_eval_batch[1][:60]


def _bim():
    return get_attack("bim", eps=0.1, eps_iter=0.02, nb_iter=5)


def test_batched_generation_matches_one_call(mnist_model_c, data):
    x, y = data
    out, info = generate(_bim(), mnist_model_c, x, y, batch_size=25, progress=False, return_info=True)
    np.testing.assert_allclose(out, _bim()(mnist_model_c, x, y), atol=1e-6)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert info["cache"] == "disabled" and info["num_examples"] == 60 and 0 <= info["success_rate"] <= 1


def test_seeded_generation_is_reproducible(mnist_model_c, data):
    x, y = data
    attack = get_attack("pgd", eps=0.1, eps_iter=0.02, nb_iter=3, seed=7)
    first = generate(attack, mnist_model_c, x, y, batch_size=32, progress=False)
    np.testing.assert_array_equal(first, generate(attack, mnist_model_c, x, y, batch_size=32, progress=False))


def test_cache_hit_returns_identical_arrays(mnist_model_c, data, tmp_path):
    x, y = data
    attack = get_attack("pgd", eps=0.1, eps_iter=0.02, nb_iter=3)  # unseeded: a rerun would differ
    first, info = generate(attack, mnist_model_c, x, y, cache_dir=tmp_path, progress=False, return_info=True)
    assert info["cache"] == "miss"
    second, info2 = generate(attack, mnist_model_c, x, y, cache_dir=tmp_path, progress=False, return_info=True)
    assert info2["cache"] == "hit" and info2["path"] == info["path"]
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32
    assert info2["success_rate"] == info["success_rate"]
    meta = json.loads((tmp_path / (info["path"].rsplit("/", 1)[1][:-4] + ".json")).read_text())
    assert meta["description"]["attack"]["params"]["eps"] == 0.1
    assert meta["description"]["model"] == model_fingerprint(mnist_model_c)
    # a new attack object with the same settings hits too
    third = generate(
        get_attack("pgd", eps=0.1, eps_iter=0.02, nb_iter=3), mnist_model_c, x, y, cache_dir=tmp_path, progress=False
    )
    np.testing.assert_array_equal(first, third)


def test_changed_param_model_data_or_labels_miss(mnist_model_c, data, tmp_path):
    x, y = data
    base_key, _ = cache_key(_bim(), mnist_model_c, x, y)
    generate(_bim(), mnist_model_c, x, y, cache_dir=tmp_path, progress=False)

    other_model = keras.models.clone_model(mnist_model_c)
    other_model.set_weights([w + 1e-3 for w in mnist_model_c.get_weights()])
    assert model_fingerprint(other_model) != model_fingerprint(mnist_model_c)

    variants = {
        "param": (get_attack("bim", eps=0.1, eps_iter=0.02, nb_iter=6), mnist_model_c, x, y),
        "backend": (get_attack("bim", backend="cleverhans", eps=0.1, eps_iter=0.02, nb_iter=5), mnist_model_c, x, y),
        "model": (_bim(), other_model, x, y),
        "data": (_bim(), mnist_model_c, np.clip(x + 1 / 255, 0, 1), y),
        "labels": (_bim(), mnist_model_c, x, (y + 1) % 10),
        "predicted labels": (_bim(), mnist_model_c, x, None),
    }
    keys = {base_key}
    for name, (attack, model, xs, ys) in variants.items():
        key, _ = cache_key(attack, model, xs, ys)
        assert key not in keys, name
        keys.add(key)
    _, info = generate(*variants["model"], cache_dir=tmp_path, progress=False, return_info=True)
    assert info["cache"] == "miss"
    _, info = generate(*variants["param"], cache_dir=tmp_path, progress=False, return_info=True)
    assert info["cache"] == "miss"
    assert len(list(tmp_path.glob("*.npz"))) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "swap"])
def test_corrupt_or_mismatched_entry_is_regenerated_with_a_warning(mnist_model_c, data, tmp_path, damage):
    x, y = data
    good, info = generate(_bim(), mnist_model_c, x, y, cache_dir=tmp_path, progress=False, return_info=True)
    path = tmp_path / info["path"].rsplit("/", 1)[1]
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "flip":  # a valid npz whose array no longer matches its checksum
        with np.load(path) as npz:
            arrays = dict(npz)
        arrays["x_adv"] = arrays["x_adv"].copy()
        arrays["x_adv"][0, 0, 0, 0] = 0.5
        np.savez(path, **arrays)
    else:  # another entry's file under this name
        _, other = generate(
            get_attack("fgsm", eps=0.05), mnist_model_c, x, y, cache_dir=tmp_path, progress=False, return_info=True
        )
        shutil.copy(other["path"], path)
    with pytest.warns(RuntimeWarning, match="regenerating"):
        again, info2 = generate(_bim(), mnist_model_c, x, y, cache_dir=tmp_path, progress=False, return_info=True)
    assert info2["cache"] == "regenerated"
    np.testing.assert_allclose(again, good, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info3 = generate(_bim(), mnist_model_c, x, y, cache_dir=tmp_path, progress=False, return_info=True)
    assert info3["cache"] == "hit"


def test_generate_checks_its_arguments(mnist_model_c, data, tmp_path):
    x, y = data
    with pytest.raises(ValueError, match="argument `attack`"):
        generate("pgd", mnist_model_c, x, y)
    with pytest.raises(ValueError, match="argument `batch_size`"):
        generate(_bim(), mnist_model_c, x, y, batch_size=0)
    with pytest.raises(ValueError, match="argument `y`"):
        generate(_bim(), mnist_model_c, x, y[:3])
    with pytest.raises(ValueError, match="argument `model`"):
        generate(_bim(), lambda z: mnist_model_c(z), x, y, cache_dir=tmp_path)


def test_targeted_generation_and_autoattack_components(mnist_model_c, data):
    x, y = data
    targets = (y + 3) % 10
    attack = get_attack("bim", eps=0.3, eps_iter=0.03, nb_iter=10, targeted=True)
    out, info = generate(attack, mnist_model_c, x, y, y_target=targets, batch_size=30, progress=False, return_info=True)
    assert info["success_rate"] > 0.5
    aa = get_attack("autoattack", eps=0.1, nb_iter=5, n_target_classes=1, nb_queries=20, seed=0)
    _, info = generate(aa, mnist_model_c, x[:20], y[:20], batch_size=10, progress=False, return_info=True)
    assert [c["name"] for c in info["components"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert sum(c["broken"] for c in info["components"]) == info["num_success"]


def test_interrupted_generation_resumes_from_its_finished_batches(mnist_model_c, data, tmp_path, monkeypatch):
    x, y = data
    attack = get_attack("pgd", eps=0.1, eps_iter=0.02, nb_iter=3, seed=7)  # random start: streams must match
    reference = generate(attack, mnist_model_c, x, y, batch_size=16, progress=False)
    original = type(attack).__call__
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(attack), "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(attack, mnist_model_c, x, y, batch_size=16, cache_dir=tmp_path, progress=False)
    (partial,) = tmp_path.glob("*.partial")
    assert sorted(p.name for p in partial.iterdir()) == ["batch-000000.npz", "batch-000001.npz"]
    calls.clear()
    monkeypatch.setattr(type(attack), "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    resumed, info = generate(
        attack, mnist_model_c, x, y, batch_size=16, cache_dir=tmp_path, progress=False, return_info=True
    )
    assert len(calls) == 2  # batches 2 and 3 of 4
    np.testing.assert_array_equal(resumed, reference)
    assert info["cache"] == "miss" and info["num_success"] == int(
        (np.asarray(mnist_model_c(resumed)).argmax(-1) != y).sum()
    )
    assert not partial.exists()


def test_a_damaged_finished_batch_is_attacked_again_with_a_warning(mnist_model_c, data, tmp_path):
    from tfdefense.attacks.generation import _PartialBatches

    x, y = data
    attack = _bim()
    reference = generate(attack, mnist_model_c, x, y, batch_size=32, progress=False)
    key, _ = cache_key(attack, mnist_model_c, x, y)
    name = f"{attack.name}-{attack.backend}-{key[:24]}.npz"
    partial = _PartialBatches(tmp_path / (name + ".partial"), key, 32)
    partial.store(0, np.zeros((32, *x.shape[1:]), np.float32), {"num_success": 0})
    (tmp_path / (name + ".partial") / "batch-000000.npz").write_bytes(b"truncated")
    partial.store(1, np.zeros((28, *x.shape[1:]), np.float32), {"num_success": 0})
    other = _PartialBatches(tmp_path / "elsewhere", key, 16)  # another batch size: ignored, not an error
    assert other.load(0, (16, *x.shape[1:])) is None
    with pytest.warns(RuntimeWarning, match="batch-000000.npz cannot be read"):
        out = generate(attack, mnist_model_c, x, y, batch_size=32, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(out[:32], reference[:32], atol=1e-6)
    np.testing.assert_array_equal(out[32:], 0)  # batch 1 was stored as finished for this key: reused as it is
