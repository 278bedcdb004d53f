"""An exported SavedModel serves in a fresh Python process that never imports tfdefense."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np

from tfdefense.defenses import Pix2PixDefense
from tfdefense.export import export_saved_model
from tfdefense.models import model_c, patchgan_preset, unet_generator_preset

RELOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, x_path, out_path = sys.argv[1:4]
    loaded = tf.saved_model.load(path)
    x = np.load(x_path)
    out = {"purify": loaded.purify(tf.constant(x)).numpy()}
    if hasattr(loaded, "classify"):
        out["classify"] = loaded.classify(tf.constant(x)).numpy()
        out["signature"] = list(loaded.signatures["classify"](images=tf.constant(x)).values())[0].numpy()
    np.savez(out_path, **out)
    print(json.dumps({"tfdefense_imported": any(m.startswith("tfdefense") for m in sys.modules),
                      "signatures": sorted(loaded.signatures)}))
    """
)


def test_saved_model_reloads_without_tfdefense(tmp_path, rng):
    keras.utils.set_random_seed(0)
    classifier = model_c()
    defense = Pix2PixDefense(unet_generator_preset("tiny"), patchgan_preset("tiny"))
    path = export_saved_model(defense, tmp_path / "purifier", classifier=classifier)
    x = rng.random((5, 28, 28, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, str(path), str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info == {"tfdefense_imported": False, "signatures": ["classify", "purify", "serving_default"]}
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["purify"], defense.purify(x))
    expected_logits = np.asarray(classifier(defense(x, training=False), training=False))
    np.testing.assert_array_equal(out["classify"], expected_logits)
    np.testing.assert_array_equal(out["signature"], expected_logits)
