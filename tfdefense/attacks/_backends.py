"""Adapters to the cleverhans 4.0.0 and ART 1.20 implementations.

Nothing here forks either library; the adaptations to Keras 3 / numpy 2 are
made at the boundary:

* cleverhans' BIM / MI-FGSM default to `sanity_checks=True`, whose
  `np.all(list_of_tensors)` fails on numpy >= 1.24: the gradient attacks'
  cleverhans hooks (gradient.py) always pass `sanity_checks=False` (and call
  `projected_gradient_descent` directly for PGD).
* cleverhans' `CarliniWagnerL2` resets its optimizer with
  `optimizer.variables()` (a method in Keras 2, a list property in Keras 3)
  and, because it builds its constant with the image's shape, multiplies the
  loss by batch * pixels. `_CarliniWagnerL2` gives it an Adam whose variable
  list is also callable (resetting only the slots, never the learning rate)
  and feeds its `gradient` step the per-example constant.
* ART: a `TensorFlowV2Classifier` around the Keras model (KerasClassifier is
  much slower on Keras 3), cached per model; labels one-hot; ART's batch size
  is the whole call (generation batches above it).
"""

import collections
import warnings

import numpy as np

# the classifier holds the model, so a weak-keyed cache would never let it go: keep the last few
_ART_CLASSIFIERS = collections.OrderedDict()
_ART_CACHE_SIZE = 4


# --------------------------------------------------------------------------- ART


def import_art_evasion():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "PyTorch not found" and friends
        from art.attacks import evasion

    return evasion


def art_classifier(model, image_shape, num_classes):
    """A cached ART `TensorFlowV2Classifier` wrapping the Keras logits model."""
    key = (id(model), tuple(image_shape), num_classes)
    entry = _ART_CLASSIFIERS.get(key)
    if entry is not None and entry._model is model:
        _ART_CLASSIFIERS.move_to_end(key)
        return entry
    import keras

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(
        model=model,
        nb_classes=num_classes,
        input_shape=tuple(image_shape),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    _ART_CLASSIFIERS[key] = classifier
    while len(_ART_CLASSIFIERS) > _ART_CACHE_SIZE:
        _ART_CLASSIFIERS.popitem(last=False)
    return classifier


def onehot(labels, num_classes):
    return np.eye(num_classes, dtype=np.float32)[labels]


def run_art(attack_cls_name, model, x, labels, num_classes=None, **kwargs):
    """Builds ART's `attack_cls_name` on `model` and runs it on (x, one-hot labels)."""
    from tfdefense.attacks.base import num_classes_of

    evasion = import_art_evasion()
    num_classes = num_classes or num_classes_of(model, x)
    classifier = art_classifier(model, x.shape[1:], num_classes)
    kwargs.setdefault("batch_size", max(1, len(x)))
    attack = getattr(evasion, attack_cls_name)(classifier, **kwargs)
    y = None if labels is None else onehot(labels, num_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(attack.generate(x=x, y=y), dtype=np.float32)


# --------------------------------------------------------------------------- cleverhans


class _CallableVariableList(list):
    """A list that, called like Keras 2's `optimizer.variables()`, returns the resettable slots."""

    def __call__(self):
        return [v for v in self if "learning_rate" not in v.path]


def _keras3_adam(learning_rate):
    import keras

    class _Adam(keras.optimizers.Adam):
        @property
        def variables(self):
            return _CallableVariableList(super().variables)

    return _Adam(learning_rate)


def _cleverhans_cw_class():
    import tensorflow as tf
    from cleverhans.tf2.attacks import carlini_wagner_l2 as cw

    class _CarliniWagnerL2(cw.CarliniWagnerL2):
        def __init__(self, model_fn, **kwargs):
            super().__init__(model_fn, **kwargs)
            self.optimizer = _keras3_adam(self.learning_rate)

        @tf.function
        def gradient(self, x, y, modifier, const):
            # cleverhans keeps `const` with the image's shape (B, H, W, C), later broadcast
            # against (B,) to (B, H, W, B); every [..., b] slice holds example b's constant.
            if len(const.shape) > 1:
                const = tf.reduce_mean(const, axis=list(range(len(const.shape) - 1)))
            return cw.CarliniWagnerL2.gradient.python_function(self, x, y, modifier, const)

    return _CarliniWagnerL2


def cleverhans_cw_l2(model, x, labels, targeted, p):
    """cleverhans' C&W-L2 (Adam in tanh space, binary search over the constant)."""
    import tensorflow as tf

    from tfdefense.attacks.base import num_classes_of

    num_classes = num_classes_of(model, x)
    attack = _cleverhans_cw_class()(
        model,
        y=onehot(labels, num_classes),
        targeted=targeted,
        batch_size=max(1, len(x)),
        clip_min=0.0,
        clip_max=1.0,
        binary_search_steps=p["binary_search_steps"],
        max_iterations=p["max_iterations"],
        abort_early=p["abort_early"],
        confidence=p["confidence"],
        initial_const=p["initial_const"],
        learning_rate=p["learning_rate"],
    )
    attack.targeted = targeted  # cleverhans infers "targeted" from y; we pass true labels when untargeted
    return np.asarray(attack.attack(tf.constant(x)), dtype=np.float32)
