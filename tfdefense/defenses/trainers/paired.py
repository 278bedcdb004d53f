"""Paired `(x_adv, x_clean[, y])` training data for purifiers, from several attacks.

Two recipes:

- `mode="split"` (the versatile defense's multi-attack recipe): the images of
  every class are split evenly across the attacks, so each image is attacked
  once, by one attack. With `per_class=18` and 6 attacks every attack gets 3
  images of every class (the paper's setting). When a class's count is not a
  multiple of the number of attacks, the attacks that get one image more
  rotate from class to class, so the totals stay balanced.
- `mode="all"`: every image under every attack (N * len(attacks) pairs).

Attacks come from the `tfdefense.attacks` registry and run through
`tfdefense.attacks.generate`, so with `cache_dir` the adversarial examples are
cached on disk (keyed by model weights, attack parameters and data) and
reused by later runs.
"""

from typing import NamedTuple

import numpy as np

from tfdefense._validation import check_choice, check_images, check_labels, check_number, invalid_value

MODES = ("split", "all")


class PairedExamples(NamedTuple):
    """Adversarial/clean pairs: arrays of equal length, plus where each came from.

    Fields: x_adv, x_clean (float32 NHWC in [0, 1]), y (int64 labels),
    attack_index (int: position in `attack_names`, -1 for identity pairs),
    source_index (int: row of the input `x` each pair was made from),
    attack_names (tuple of str), success (bool: the target model misclassifies
    x_adv; always False for identity pairs).
    """

    x_adv: np.ndarray
    x_clean: np.ndarray
    y: np.ndarray
    attack_index: np.ndarray
    source_index: np.ndarray
    attack_names: tuple
    success: np.ndarray

    def __len__(self):
        return len(self.x_adv)

    def dataset(self, batch_size=64, shuffle=True, seed=0, with_labels=True, drop_remainder=False):
        """A `tf.data.Dataset` of `(x_adv, x_clean, y)` (or `(x_adv, x_clean)`) batches."""
        from tfdefense.data.pipelines import make_paired_pipeline

        return make_paired_pipeline(
            self.x_adv,
            self.x_clean,
            self.y if with_labels else None,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_remainder=drop_remainder,
        )

    def select(self, mask):
        """The pairs where boolean `mask` is True (e.g. `pairs.success`)."""
        mask = np.asarray(mask, bool)
        if mask.shape != (len(self),):
            raise invalid_value("mask", f"a boolean array of shape ({len(self)},)", f"shape {mask.shape}")
        return PairedExamples(
            self.x_adv[mask],
            self.x_clean[mask],
            self.y[mask],
            self.attack_index[mask],
            self.source_index[mask],
            self.attack_names,
            self.success[mask],
        )


def resolve_attacks(attacks):
    """Attack objects from names, `(name, params)` pairs, `{"name": ..., **params}` dicts or attacks."""
    from tfdefense.attacks import Attack, get_attack

    if isinstance(attacks, (str, dict, Attack)) or not isinstance(attacks, (list, tuple)) or not attacks:
        raise invalid_value("attacks", "a non-empty list of attacks (names, (name, params) or Attack objects)", attacks)
    resolved = []
    for spec in attacks:
        if isinstance(spec, Attack):
            resolved.append(spec)
        elif isinstance(spec, str):
            resolved.append(get_attack(spec))
        elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], dict):
            resolved.append(get_attack(spec[0], **spec[1]))
        elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
            params = {k: v for k, v in spec.items() if k != "name"}
            resolved.append(get_attack(spec["name"], **params))
        else:
            raise invalid_value(
                "attacks", "names, (name, params) pairs, {'name': ..., **params} dicts or attacks", attacks
            )
    return resolved


def attack_label(attack):
    """A short readable name, e.g. "pgd(eps=0.3)"."""
    defaults = getattr(type(attack), "defaults", {})
    changed = {k: v for k, v in attack.params.items() if k in defaults and v != defaults[k]}
    suffix = ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
    return f"{attack.name}({suffix})" if suffix else attack.name


def split_by_class(y, num_attacks, seed=0):
    """Assignment of every example to one of `num_attacks` attacks, even within each class.

    Returns an int array of attack indices, one per example.
    """
    y = check_labels(y, "y")
    check_number("num_attacks", num_attacks, minimum=1, integer=True)
    rng = np.random.default_rng(seed)
    assignment = np.full(len(y), -1, np.int64)
    for position, label in enumerate(np.unique(y)):
        members = rng.permutation(np.flatnonzero(y == label))
        if len(members) < num_attacks:
            raise invalid_value(
                "y",
                f"at least {num_attacks} examples of every class (one per attack) in mode='split'",
                f"{len(members)} example(s) of class {label}",
            )
        # Rotate which attacks get the remainder so totals stay balanced.
        order = np.roll(np.arange(num_attacks), -position)
        for group, attack in zip(np.array_split(members, num_attacks), order, strict=False):
            assignment[group] = attack
    return assignment


def make_attack_pairs(
    model,
    x,
    y,
    attacks,
    mode="split",
    per_class=None,
    include_clean=False,
    use_labels=True,
    seed=0,
    cache_dir=None,
    batch_size=256,
    progress=False,
):
    """Builds purifier training pairs from several attacks on `model`.

    Args:
      model: the target classifier (logits) the attacks are crafted on.
      x, y: clean images (float32 NHWC in [0, 1]) and int labels.
      attacks: list of attacks: registry names ("fgsm"), `(name, params)`
        pairs (`("pgd", {"eps": 0.3})`), `{"name": ..., **params}` dicts, or
        attacks from `tfdefense.attacks.get_attack`.
      mode: "split" (each image under one attack, even per class: the
        versatile recipe) or "all" (every image under every attack).
      per_class: first keep this many images of every class (seeded choice;
        18 in the versatile paper). None keeps all of `x`.
      include_clean: also add identity pairs (x_clean, x_clean) of every
        image used, so the purifier learns to leave clean images alone.
      use_labels: attack with the true labels `y` (default) or, if False,
        with the model's predictions.
      seed: seeds the per-class choice and the split.
      cache_dir: attack cache directory for `tfdefense.attacks.generate`.

    Returns a `PairedExamples` (its `.dataset(batch_size)` feeds
    `Pix2PixDefense.fit`).
    """
    from tfdefense.attacks import generate
    from tfdefense.data.pipelines import take_balanced
    from tfdefense.inference import predict_labels

    x = check_images(x, "x", allow_tensor=False)
    y = check_labels(y, "y", num_examples=len(x))
    check_choice("mode", mode, MODES)
    check_number("per_class", per_class, minimum=1, integer=True, allow_none=True)
    check_number("seed", seed, integer=True)
    if not isinstance(include_clean, bool):
        raise invalid_value("include_clean", "True or False", include_clean)
    attacks = resolve_attacks(attacks)
    names = tuple(attack_label(a) for a in attacks)

    source = np.arange(len(x))
    if per_class is not None:
        source, _ = take_balanced(np.arange(len(x)), y, per_class, seed)  # row indices, class by class

    if mode == "split":
        assignment = split_by_class(y[source], len(attacks), seed=seed)
        blocks = [(k, source[assignment == k]) for k in range(len(attacks))]
    else:
        blocks = [(k, source) for k in range(len(attacks))]

    x_adv, index, attack_index = [], [], []
    for k, rows in blocks:
        if len(rows) == 0:
            continue
        labels = y[rows] if use_labels else None
        x_adv.append(
            generate(attacks[k], model, x[rows], labels, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
        )
        index.append(rows)
        attack_index.append(np.full(len(rows), k, np.int64))
    x_adv, index, attack_index = np.concatenate(x_adv), np.concatenate(index), np.concatenate(attack_index)
    if mode == "split":  # back to the input order: pair i comes from source row i
        order = np.argsort(index, kind="stable")
        x_adv, index, attack_index = x_adv[order], index[order], attack_index[order]
    success = predict_labels(model, x_adv) != y[index]
    if include_clean:
        clean_rows = np.sort(source)
        x_adv = np.concatenate([x_adv, x[clean_rows]])
        index = np.concatenate([index, clean_rows])
        attack_index = np.concatenate([attack_index, np.full(len(clean_rows), -1, np.int64)])
        success = np.concatenate([success, np.zeros(len(clean_rows), bool)])
    return PairedExamples(
        x_adv=x_adv.astype(np.float32, copy=False),
        x_clean=x[index],
        y=y[index],
        attack_index=attack_index,
        source_index=index,
        attack_names=names,
        success=success,
    )
