"""RobustAccuracyMonitor (held-out clean / PGD accuracy per epoch, each kind of trained model) and EpochLog."""

import json

import keras
import numpy as np
import pytest

from tfdefense.defenses import AdversarialTrainer, RobustAccuracyMonitor, RobustPurifier
from tfdefense.models import trainable_copy
from tfdefense.models.unet import unet_generator
from tfdefense.training import ComputeBudget, EpochLog


def test_monitor_logs_held_out_accuracy_of_an_adversarially_trained_classifier(mnist, mnist_model_c, tmp_path):
    (x_train, y_train), (x_test, y_test) = mnist
    log = tmp_path / "monitor.json"
    monitor = RobustAccuracyMonitor(x_test[:200], y_test[:200], eps=0.3, steps=5, n_pgd=100)
    trainer = AdversarialTrainer(trainable_copy(mnist_model_c), eps=0.3, eps_iter=0.1, nb_iter=3, seed=0)
    trainer.compile()
    callbacks = [ComputeBudget(), monitor, EpochLog(log)]
    history = trainer.fit(x_train[:256], y_train[:256], batch_size=64, epochs=2, verbose=0, callbacks=callbacks)
    logged = history.history
    assert len(logged["monitor_pgd"]) == 2
    # Model C barely trained against PGD: the held-out digits mostly fall; clean accuracy stays high.
    assert logged["monitor_clean"][-1] >= 0.85 and logged["monitor_pgd"][-1] <= 0.5
    rows = json.loads(log.read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["cpu_seconds"] > 0 for r in rows)
    assert rows[1]["monitor_pgd"] == pytest.approx(logged["monitor_pgd"][1]) and "adv_loss" in rows[1]

    # A resumed run (epoch 2 again) replaces the rows from the resumed epoch on, keeps the earlier ones.
    trainer.fit(
        x_train[:256], y_train[:256], batch_size=64, epochs=3, initial_epoch=1, verbose=0, callbacks=[EpochLog(log)]
    )
    assert [r["epoch"] for r in json.loads(log.read_text())] == [1, 2, 3]


def test_monitor_attacks_through_every_member_of_an_ensemble_purifier(mnist, mnist_model_c):
    (x_train, y_train), (x_test, y_test) = mnist
    keras.utils.set_random_seed(0)
    other = trainable_copy(mnist_model_c)
    other.trainable = False
    generator = unet_generator((28, 28, 1), base_filters=4, max_filters=16, depth=2, dropout=0.0)
    purifier = RobustPurifier(generator, [mnist_model_c, other], attack_eps=0.3, attack_steps=1, seed=0)
    purifier.compile()
    monitor = RobustAccuracyMonitor(x_test[:40], y_test[:40], eps=0.3, steps=3)
    history = purifier.fit(x_train[:64], y_train[:64], batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    logged = {k: v[0] for k, v in history.history.items()}
    assert {"monitor_pgd_0", "monitor_pgd_1", "monitor_clean"} <= set(logged)
    assert logged["monitor_pgd"] == pytest.approx((logged["monitor_pgd_0"] + logged["monitor_pgd_1"]) / 2)
    assert 0 <= logged["monitor_pgd"] <= 1


def test_monitor_arguments_are_checked():
    x, y = np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="`eps`"):
        RobustAccuracyMonitor(x, y, eps=-0.1)
    with pytest.raises(ValueError, match="`x`"):
        RobustAccuracyMonitor(x * 255 + 2, y, eps=0.3)
    with pytest.raises(ValueError, match="`steps`"):
        RobustAccuracyMonitor(x, y, eps=0.3, steps=0)
