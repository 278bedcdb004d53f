"""`RobustAccuracyMonitor`: held-out accuracy under PGD through the model being trained, every epoch.

The robust trainers (`RobustPurifier`, `AdversarialTrainer`) report accuracy on
their own training attack's batches; what generalises is accuracy on images
they never trained on. At the end of every epoch the monitor attacks held-out
images through the current pipeline with PGD (random start, step 2.5 eps /
steps) and logs

- `monitor_clean`: accuracy of the pipeline on all held-out images,
- `monitor_pgd`: accuracy under PGD on the first `n_pgd` of them (for an
  ensemble purifier: the mean over its members, each also as
  `monitor_pgd_<i>`).

The pipeline is `DefendedClassifier(purifier, member)` for a `RobustPurifier`
(every member of an ensemble), the classifier of an `AdversarialTrainer`,
and the model itself otherwise. `tfdefense.training.EpochLog` keeps the
logged values of every epoch in a file across resumed runs.
"""

import keras
import numpy as np

from tfdefense._validation import check_number


class RobustAccuracyMonitor(keras.callbacks.Callback):
    """Held-out clean and PGD accuracy of the pipeline being trained, logged after every epoch.

    Args:
      x, y: held-out images (float32 [0, 1]) and int labels.
      eps: Linf radius of the monitor's PGD.
      steps: PGD iterations (20).
      n_pgd: images attacked (the first n_pgd; None: all).
      seed: seed of the PGD random start (the same start every epoch).
      batch_size: images per attack call.
    """

    def __init__(self, x, y, eps, steps=20, n_pgd=None, seed=0, batch_size=500):
        super().__init__()
        from tfdefense._validation import check_images, check_labels

        self.x = check_images(x, "x")
        self.y = check_labels(y, "y", num_examples=len(self.x))
        check_number("eps", eps, minimum=0, maximum=1)
        check_number("steps", steps, minimum=1, integer=True)
        check_number("n_pgd", n_pgd, minimum=1, integer=True, allow_none=True)
        check_number("seed", seed, integer=True)
        check_number("batch_size", batch_size, minimum=1, integer=True)
        self.eps, self.steps, self.seed, self.batch_size = float(eps), int(steps), int(seed), int(batch_size)
        self.n_pgd = len(self.x) if n_pgd is None else min(int(n_pgd), len(self.x))

    def pipelines(self):
        """The model(s) the monitor attacks: one per classifier the trained model protects."""
        from tfdefense.defenses import DefendedClassifier

        model = self.model
        if hasattr(model, "classifiers") and hasattr(model, "generator"):  # RobustPurifier
            return [DefendedClassifier(model, member) for member in model.classifiers]
        if hasattr(model, "classifier") and not hasattr(model, "generator"):  # AdversarialTrainer
            return [model.classifier]
        return [model]

    def measure(self):
        """{monitor_clean, monitor_pgd[, monitor_pgd_<i>]} of the current weights."""
        from tfdefense.attacks import get_attack
        from tfdefense.attacks.generation import generate
        from tfdefense.inference import predict_labels

        pgd = get_attack(
            "pgd",
            eps=self.eps,
            eps_iter=2.5 * self.eps / self.steps,
            nb_iter=self.steps,
            rand_init=True,
            seed=self.seed,
        )
        x, y = self.x[: self.n_pgd], self.y[: self.n_pgd]
        clean, robust = [], []
        for pipeline in self.pipelines():
            clean.append(float(np.mean(predict_labels(pipeline, self.x, batch_size=self.batch_size) == self.y)))
            x_adv = generate(pgd, pipeline, x, y, batch_size=self.batch_size, progress=False)
            robust.append(float(np.mean(predict_labels(pipeline, x_adv, batch_size=self.batch_size) == y)))
        row = {"monitor_clean": float(np.mean(clean)), "monitor_pgd": float(np.mean(robust))}
        if len(robust) > 1:
            row.update({f"monitor_pgd_{i}": value for i, value in enumerate(robust)})
        return row

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self.measure())
