"""EpochLog: one row per epoch, resumed runs replace from the resumed epoch on, other files refused."""

import json

import keras
import numpy as np
import pytest

from tfdefense.training import EpochLog, read_epoch_log


def test_rows_survive_a_resumed_fit_and_other_files_are_refused(tmp_path):
    x, y = np.random.default_rng(0).random((32, 4), np.float32), np.zeros(32, np.int64)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log = tmp_path / "epochs.json"
    model.fit(x, y, epochs=3, verbose=0, callbacks=[EpochLog(log)])
    rows = read_epoch_log(log)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(isinstance(r["loss"], float) for r in rows)
    model.fit(x, y, epochs=4, initial_epoch=1, verbose=0, callbacks=[EpochLog(log)])  # resumed after epoch 1
    resumed = json.loads(log.read_text())
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4] and resumed[0] == rows[0] and resumed[1] != rows[1]
    assert read_epoch_log(tmp_path / "none.json") == []
    broken = tmp_path / "broken.json"
    for text in ('{"not": "a list"}', "[1, 2]", "not json"):
        broken.write_text(text)
        with pytest.raises(ValueError, match="`path`.*EpochLog"):
            EpochLog(broken).on_train_begin()
