import numpy as np
import pytest

from tfdefense.evaluation import attack_success_rate, l2_distances, mean_absolute_error, psnr, seconds_per_image, ssim


def test_image_metrics_on_known_values(rng):
    x = rng.random((3, 16, 16, 1), dtype=np.float32) * 0.5
    assert mean_absolute_error(x + 0.1, x) == pytest.approx(0.1, abs=1e-6)
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-3)
    assert psnr(x, x) == np.inf
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, rng.random(x.shape, dtype=np.float32)) < 0.5
    np.testing.assert_allclose(l2_distances(x + 0.1, x), np.full(3, 0.1 * 16), rtol=1e-5)
    with pytest.raises(ValueError, match="`reference`"):
        psnr(x, x[:2])


def test_success_rate_and_timing(mnist_model_c, mnist_eval_batch):
    x, y = mnist_eval_batch
    assert attack_success_rate(mnist_model_c, x, y) == 0.0
    assert attack_success_rate(mnist_model_c, x, y, targeted=True) == 1.0
    assert 0 < seconds_per_image(lambda b: mnist_model_c(b), x[:64], batch_size=32, repeats=1) < 0.1


def test_wilson_interval_known_values():
    import pytest

    from tfdefense.evaluation.metrics import wilson_interval

    low, high = wilson_interval(940, 1000)  # 94.0% of 1000: [92.35, 95.31]
    assert low == pytest.approx(0.92353, abs=1e-4) and high == pytest.approx(0.95310, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
