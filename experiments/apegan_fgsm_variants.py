"""APE-GAN's eps-0.4 cell: does the FGSM the paper used (cleverhans v1) explain the gap?

The paper crafts FGSM with cleverhans v1 (section 4.1.3), whose `fgsm(x, predictions, eps,
clip_min=None, clip_max=None)` does not clip to the image range unless asked and takes the
model's own predicted label. tfdefense's FGSM clips to [0, 1] and uses the true label (the
package's standard: images stay in [0, 1]). Clipping changes what a large eps does: a background
pixel at 0 can only move up, a stroke pixel at 1 only down, so the clipped perturbation has about
half the pixels' energy of the unclipped one, and what APE-GAN learns to remove at eps 0.3 differs.

For each FGSM variant ("clipped": tfdefense's; "unclipped": cleverhans v1's), this script crafts
eps-0.3 pairs of every training digit on a given model C, trains APE-GAN (the paper's networks,
2 epochs, batches of 64, `APEGAN.from_preset("mnist")`) on them, and reports on all test digits the
error rate of C and of C behind each APE-GAN under both variants at eps 0.1-0.4, and on clean
digits. Images outside [0, 1] exist only inside this script (the generator and C are called
directly; the package's public calls refuse them).

    python experiments/apegan_fgsm_variants.py --classifier runs/apegan-full/models/C-....keras \\
        --out apegan_fgsm_variants.json
"""

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("clipped", "unclipped")
EPS_GRID = (0.1, 0.2, 0.3, 0.4)
TRAIN_EPS = 0.3
BATCH = 500


def fgsm(model, x, y, eps, variant):
    """FGSM at `eps` in batches: clipped to [0, 1] with true labels `y`, or unclipped with C's own labels."""
    import numpy as np
    import tensorflow as tf

    out = []
    for i in range(0, len(x), BATCH):
        xb = tf.constant(x[i : i + BATCH])
        with tf.GradientTape() as tape:
            tape.watch(xb)
            logits = tf.cast(model(xb, training=False), tf.float32)
            labels = y[i : i + BATCH] if variant == "clipped" else tf.argmax(logits, axis=-1)
            loss = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        step = xb + eps * tf.sign(tape.gradient(loss, xb))
        out.append((tf.clip_by_value(step, 0.0, 1.0) if variant == "clipped" else step).numpy())
    return np.concatenate(out).astype(np.float32)


def error_rate(model, x, y, purifier=None):
    import numpy as np

    wrong = 0
    for i in range(0, len(x), BATCH):
        xb = x[i : i + BATCH]
        if purifier is not None:
            xb = purifier.generator(xb, training=False)
        wrong += int((np.asarray(model(xb, training=False)).argmax(-1) != y[i : i + BATCH]).sum())
    return wrong / len(x)


def train_apegan(x_adv, x_clean, epochs, seed):
    """APE-GAN's own `train_step`, driven by a plain loop: `fit` refuses images outside [0, 1]."""
    import keras
    import tensorflow as tf

    from tfdefense.defenses import APEGAN

    keras.utils.set_random_seed(seed)
    model = APEGAN.from_preset("mnist")
    model.compile()
    step = tf.function(model.train_step)
    mse = []
    for epoch in range(epochs):
        data = tf.data.Dataset.from_tensor_slices((x_adv, x_clean)).shuffle(len(x_adv), seed=seed + epoch).batch(64)
        model.reset_metrics()
        for batch in data:
            logs = step(batch)
        mse.append(float(logs["g_mse"]))
    return model, mse


def run(classifier_path, data_dir, epochs, seed, variants, n_train=None, n_test=None):
    import keras

    from tfdefense.data import load_dataset

    classifier = keras.saving.load_model(classifier_path)
    (x_train, y_train), (x_test, y_test) = load_dataset("mnist", data_dir=data_dir)
    x_train, y_train, x_test, y_test = x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test]
    results = {
        "classifier": str(classifier_path),
        "epochs": epochs,
        "train_eps": TRAIN_EPS,
        "train_digits": len(x_train),
        "test_digits": len(x_test),
        "variants": {},
    }
    results["clean_error"] = {"none": error_rate(classifier, x_test, y_test)}
    attacked = {v: {eps: fgsm(classifier, x_test, y_test, eps, v) for eps in EPS_GRID} for v in VARIANTS}
    results["bare"] = {
        v: {str(eps): error_rate(classifier, x, y_test) for eps, x in attacked[v].items()} for v in VARIANTS
    }
    for variant in variants:
        start = time.perf_counter()
        x_pairs = fgsm(classifier, x_train, y_train, TRAIN_EPS, variant)
        purifier, mse = train_apegan(x_pairs, x_train, epochs, seed)
        results["variants"][variant] = {
            "train_seconds": round(time.perf_counter() - start, 1),
            "g_mse": mse,
            "clean_error": error_rate(classifier, x_test, y_test, purifier),
            "fgsm_error": {
                attack: {str(eps): error_rate(classifier, x, y_test, purifier) for eps, x in attacked[attack].items()}
                for attack in VARIANTS
            },
        }
    return results


def table(results):
    lines = [
        "| APE-GAN trained on | FGSM at test | clean | eps 0.1 | eps 0.2 | eps 0.3 | eps 0.4 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cells(values):
        return " | ".join(f"{100 * values[str(eps)]:.1f}" for eps in EPS_GRID)

    clean = 100 * results["clean_error"]["none"]
    for attack in VARIANTS:
        lines.append(f"| (no APE-GAN) | {attack} | {clean:.1f} | {cells(results['bare'][attack])} |")
    for variant, row in results["variants"].items():
        for attack in VARIANTS:
            lines.append(
                f"| {variant} | {attack} | {100 * row['clean_error']:.1f} | {cells(row['fgsm_error'][attack])} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", required=True, help="model C (.keras, returns logits)")
    parser.add_argument("--out", required=True, help="results .json (written atomically)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=2, help="APE-GAN epochs (the paper's 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="which pairs to train on: clipped,unclipped")
    parser.add_argument("--n-train", type=int, default=None, help="the first N training digits (default: all)")
    parser.add_argument("--n-test", type=int, default=None, help="the first N test digits (default: all)")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if not variants or any(v not in VARIANTS for v in variants):
        parser.error(f"argument --variants: expected names from {', '.join(VARIANTS)}, got {args.variants!r}")
    for flag, value in (("--epochs", args.epochs), ("--n-train", args.n_train), ("--n-test", args.n_test)):
        if value is not None and value < 1:
            parser.error(f"argument {flag}: expected an integer >= 1, got {value}")
    if not pathlib.Path(args.classifier).is_file():
        parser.error(f"argument --classifier: no such file {args.classifier!r}")
    from tfdefense._io import write_json

    results = run(args.classifier, args.data_dir, args.epochs, args.seed, variants, args.n_train, args.n_test)
    write_json(args.out, results)
    print(table(results))


if __name__ == "__main__":
    main()
