import keras
import numpy as np
import pytest

from tfdefense.attacks import get_attack
from tfdefense.defenses.trainers.adversarial_training import AdversarialTrainer, adversarial_training
from tfdefense.evaluation import accuracy
from tfdefense.models import model_c, trainable_copy
from tfdefense.testing import assert_fit_rejects_bad_data, assert_keras_round_trip

METRICS = {"loss", "clean_loss", "adv_loss", "clean_acc", "adv_acc"}


@pytest.fixture(scope="module")
def fgsm_trained(mnist):
    """Model C trained from scratch with FGSM adversarial training (Goodfellow: 50/50), 3 epochs of 3000 digits."""
    (x_train, y_train), _ = mnist
    keras.utils.set_random_seed(0)
    model = model_c()
    history = adversarial_training(
        model, x_train[:3000], y_train[:3000], attack="fgsm", eps=0.3, epochs=3, batch_size=64, seed=0, verbose=0
    )
    return model, history


def test_fgsm_training_restores_fgsm_accuracy(fgsm_trained, mnist_model_c, mnist_eval_batch):
    model, history = fgsm_trained
    trainer = history.model
    assert isinstance(trainer, AdversarialTrainer) and trainer.classifier is model
    assert float(trainer.mix) == 0.5 and trainer.nb_iter == 1 and not trainer.rand_init
    assert set(history.history) == METRICS
    assert history.history["adv_loss"][-1] < history.history["adv_loss"][0]
    x, y = mnist_eval_batch
    fgsm = get_attack("fgsm", eps=0.3)
    plain = accuracy(mnist_model_c, fgsm(mnist_model_c, x, y), y)
    robust = accuracy(model, fgsm(model, x, y), y)  # white-box FGSM on the trained model itself
    clean = accuracy(model, x, y)
    print(f"FGSM 0.3 white-box: plain model C {plain:.3f}, FGSM-trained {robust:.3f}; clean {clean:.3f}")
    assert plain < 0.15
    assert robust > plain + 0.4
    assert clean > 0.85


def test_pgd_step_crafts_in_the_graph_and_round_trips(tmp_path, mnist, mnist_model_c):
    (x_train, y_train), _ = mnist
    x, y = x_train[:256], y_train[:256]
    keras.utils.set_random_seed(1)
    trainer = AdversarialTrainer(model_c(), attack="pgd", eps=0.3, eps_iter=0.1, nb_iter=5, seed=0)
    assert float(trainer.mix) == 0.0 and trainer.rand_init  # Madry: 100 % adversarial
    trainer.compile()
    history = trainer.fit(x, y, batch_size=64, epochs=2, verbose=0).history
    assert set(history) == METRICS
    assert history["loss"] == pytest.approx(history["adv_loss"])  # mix 0
    # craft() returns PGD examples inside the eps-ball and [0, 1] (here on a copy of trained model C).
    copy = trainable_copy(mnist_model_c)
    x_adv = np.asarray(AdversarialTrainer(copy, eps=0.3, eps_iter=0.1, nb_iter=5, seed=0).craft(x[:64], y[:64]))
    assert np.abs(x_adv - x[:64]).max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(copy, x[:64], y[:64]) > 0.9 and accuracy(copy, x_adv, y[:64]) < 0.1
    trainer.mix.assign(1.0)  # a variable read by the compiled step
    scores = trainer.evaluate(x[:64], y[:64], return_dict=True, verbose=0)
    assert scores["loss"] == pytest.approx(scores["clean_loss"], rel=1e-5)
    loaded = assert_keras_round_trip(trainer, x[:32], tmp_path)
    assert loaded.nb_iter == 5 and loaded.attack == "pgd"
    assert float(loaded.mix) == 1.0 and not loaded.stochastic


def test_bad_input_is_rejected(mnist):
    (x_train, y_train), _ = mnist
    with pytest.raises(ValueError, match="`attack`.*Received: attack='cw'"):
        AdversarialTrainer(model_c(), attack="cw")
    with pytest.raises(ValueError, match="`eps`.*Received: eps=-0.1"):
        AdversarialTrainer(model_c(), eps=-0.1)
    with pytest.raises(ValueError, match="`eps_iter`.*Received: eps_iter=0.5"):
        AdversarialTrainer(model_c(), eps=0.3, eps_iter=0.5)
    with pytest.raises(ValueError, match="`mix`.*Received: mix=2"):
        AdversarialTrainer(model_c(), mix=2)
    with pytest.raises(ValueError, match="`classifier`"):
        AdversarialTrainer("model_c")
    frozen = model_c()
    frozen.trainable = False
    with pytest.raises(ValueError, match="`classifier`.*trainable_copy"):
        AdversarialTrainer(frozen)
    with pytest.raises(ValueError, match="`attack_params`.*nb_restarts"):
        adversarial_training(model_c(), x_train[:8], y_train[:8], nb_restarts=3)
    trainer = AdversarialTrainer(model_c())
    with pytest.raises(RuntimeError, match="compile"):
        trainer.fit(x_train[:8], y_train[:8], verbose=0)
    trainer.compile()
    with pytest.raises(ValueError, match="`y`.*Received: y=None"):
        trainer.fit(x_train[:8], None, verbose=0)
    assert_fit_rejects_bad_data(trainer, x_train[:8], y_train[:8])
