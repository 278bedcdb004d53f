"""Training callbacks: `StagedLossWeights` (the versatile defense's lambda schedule),
`EpsilonRamp` (the training attack's eps curriculum) and `ComputeBudget` (stop
at a CPU-time budget).

Values that change during `fit` live in the model's non-trainable variables
(`model.lambda_l1`, `model.lambda_perc`, `model.lambda_cls` on
`Pix2PixDefense`; `model.attack_eps`, `model.attack_step_size` on the robust
trainers); the callbacks `assign` them at the start of every epoch, so the new
values reach the already-traced train step (a Python float would be frozen
into it).
"""

import numbers
import time

import keras
import numpy as np

from tfdefense._validation import check_number, invalid_value

# The versatile defense's schedule over 100 epochs: L1 and perceptual weights
# both 100 for epochs 0-39, then the perceptual weight drops to 50 (40-69) and
# to 1 (70-99). Each stage: [start, end) epochs and the weights it sets.
VERSATILE_STAGES = (
    {"start": 0, "end": 40, "lambda_l1": 100.0, "lambda_perc": 100.0},
    {"start": 40, "end": 70, "lambda_l1": 100.0, "lambda_perc": 50.0},
    {"start": 70, "end": 100, "lambda_l1": 100.0, "lambda_perc": 1.0},
)


def versatile_stages(epochs=100):
    """The versatile schedule rescaled to `epochs` (boundaries at 40% and 70%)."""
    check_number("epochs", epochs, minimum=3, integer=True)
    first, second = round(0.4 * epochs), round(0.7 * epochs)
    bounds = [0, first, max(second, first + 1), epochs]
    return tuple({**stage, "start": bounds[i], "end": bounds[i + 1]} for i, stage in enumerate(VERSATILE_STAGES))


def _normalize_stage(index, stage):
    """A stage as {"start", "end", **weights}; accepts dicts or (start, end, {weights}) tuples."""
    if isinstance(stage, dict):
        stage = dict(stage)
        if "epochs" in stage:
            stage["start"], stage["end"] = stage.pop("epochs")
    elif isinstance(stage, (tuple, list)) and len(stage) == 3 and isinstance(stage[2], dict):
        stage = {"start": stage[0], "end": stage[1], **stage[2]}
    else:
        raise invalid_value(
            f"stages[{index}]",
            'a dict {"start": int, "end": int, "lambda_...": float} or (start, end, {weights})',
            stage,
        )
    for key in ("start", "end"):
        if key not in stage:
            raise invalid_value(f"stages[{index}]", f'a stage with a "{key}" epoch', stage)
        value = stage[key]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise invalid_value(f"stages[{index}]", f'a non-negative integer "{key}" epoch', stage)
        stage[key] = int(value)
    if stage["end"] <= stage["start"]:
        raise invalid_value(f"stages[{index}]", 'a stage with "end" > "start" (end is exclusive)', stage)
    weights = {k: v for k, v in stage.items() if k not in ("start", "end")}
    if not weights:
        raise invalid_value(f"stages[{index}]", "a stage setting at least one loss weight", stage)
    for name, value in weights.items():
        if not isinstance(name, str) or not name:
            raise invalid_value(f"stages[{index}]", "loss-weight names (str)", stage)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
            raise invalid_value(f"stages[{index}]", f"a finite non-negative weight for {name!r}", stage)
    return stage


def check_stages(stages):
    """Validates a stage table: contiguous from epoch 0, no gaps or overlaps, weights >= 0.

    Returns a tuple of normalized stages, sorted as given.
    """
    if isinstance(stages, (str, dict)) or not isinstance(stages, (list, tuple)) or not stages:
        raise invalid_value("stages", "a non-empty list of stages", stages)
    normalized = [_normalize_stage(i, stage) for i, stage in enumerate(stages)]
    if normalized[0]["start"] != 0:
        raise invalid_value("stages", "a table starting at epoch 0", list(stages))
    for i in range(1, len(normalized)):
        previous, current = normalized[i - 1], normalized[i]
        if current["start"] > previous["end"]:
            raise invalid_value(
                "stages",
                f"contiguous stages (gap: epochs {previous['end']}-{current['start'] - 1} belong to no stage)",
                list(stages),
            )
        if current["start"] < previous["end"]:
            raise invalid_value(
                "stages",
                f"non-overlapping stages (stages {i - 1} and {i} both cover epoch {current['start']})",
                list(stages),
            )
    names = set(normalized[0]) - {"start", "end"}
    for stage in normalized:
        if set(stage) - {"start", "end"} != names:
            raise invalid_value("stages", f"every stage setting the same weights {sorted(names)}", list(stages))
    return tuple(normalized)


class StagedLossWeights(keras.callbacks.Callback):
    """Sets loss-weight variables per epoch from a stage table.

    Args:
      stages: list of stages, each `{"start": s, "end": e, "lambda_l1": ...,
        "lambda_perc": ...}` (epochs [s, e), 0-based) or `(s, e, {weights})`.
        Stages must start at epoch 0 and be contiguous; weights non-negative.
        Default: the versatile schedule over 100 epochs (`VERSATILE_STAGES`).
        After the last stage the last stage's weights are kept.
      verbose: print the weights when a stage starts.

    The weights are assigned in `on_epoch_begin(epoch)` from the absolute epoch
    number, so resuming with `fit(initial_epoch=k)` or `BackupAndRestore` lands
    in the right stage; the current values are added to the epoch logs (and so
    to `History` and CSV/TensorBoard loggers placed after this callback).
    """

    def __init__(self, stages=None, verbose=0):
        super().__init__()
        self.stages = check_stages(VERSATILE_STAGES if stages is None else stages)
        self.weight_names = tuple(k for k in self.stages[0] if k not in ("start", "end"))
        self.verbose = verbose
        self._current = None

    def stage_for_epoch(self, epoch):
        """The stage covering `epoch` (the last stage after the table ends)."""
        check_number("epoch", epoch, minimum=0, integer=True)
        for stage in self.stages:
            if stage["start"] <= epoch < stage["end"]:
                return stage
        return self.stages[-1]

    def weights_for_epoch(self, epoch):
        stage = self.stage_for_epoch(epoch)
        return {name: float(stage[name]) for name in self.weight_names}

    def _variables(self):
        variables = {}
        for name in self.weight_names:
            variable = getattr(self.model, name, None)
            if variable is None or not hasattr(variable, "assign"):
                raise invalid_value(
                    "stages",
                    f"weights that are variables of the model ({type(self.model).__name__} has no variable {name!r})",
                    list(self.weight_names),
                )
            variables[name] = variable
        return variables

    def on_train_begin(self, logs=None):
        self._variables()
        # A weight whose loss term the model cannot compute would be silently ignored.
        for weight, part in (("lambda_perc", "feature_extractor"), ("lambda_cls", "classifier")):
            if weight in self.weight_names and hasattr(self.model, part) and getattr(self.model, part) is None:
                if any(stage[weight] > 0 for stage in self.stages):
                    raise invalid_value(
                        "stages",
                        f"{weight} = 0 in every stage for a model without a {part}",
                        [{k: v for k, v in stage.items() if k in ("start", "end", weight)} for stage in self.stages],
                    )

    def on_epoch_begin(self, epoch, logs=None):
        values = self.weights_for_epoch(epoch)
        for name, variable in self._variables().items():
            variable.assign(values[name])
        if self.verbose and values != self._current:
            print(f"\nEpoch {epoch + 1}: StagedLossWeights set " + ", ".join(f"{k}={v:g}" for k, v in values.items()))
        self._current = values

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name, variable in self._variables().items():
                logs[name] = float(keras.ops.convert_to_numpy(variable))


class EpsilonRamp(keras.callbacks.Callback):
    """Curriculum on the training attack's eps: linear from `start` to the model's target eps.

    At the start of epoch e (0-based, absolute) assigns eps = start + (target -
    start) * min(1, (e + 1) / ramp_epochs) to `model.attack_eps` (so the target
    is reached at epoch ramp_epochs - 1; ramp_epochs=1 is no ramp) and scales
    `model.attack_step_size` with it. Works with any model that has these two
    variables and an `attack_schedule()` method returning {"eps": target eps,
    "step_ratio": step size / eps} (`RobustPurifier`, `AdversarialTrainer`);
    resuming lands at the right eps (epoch-indexed).
    """

    def __init__(self, ramp_epochs, start=0.0, target=None):
        super().__init__()
        check_number("ramp_epochs", ramp_epochs, minimum=1, integer=True)
        check_number("start", start, minimum=0, maximum=1)
        check_number("target", target, minimum=0, maximum=1, allow_none=True)
        self.ramp_epochs = int(ramp_epochs)
        self.start = float(start)
        self.target = target
        self._ratio = None

    def on_train_begin(self, logs=None):
        for name in ("attack_schedule", "attack_eps", "attack_step_size"):
            if not hasattr(self.model, name):
                raise TypeError(
                    f"EpsilonRamp needs a model trained against an in-graph attack (with `{name}`, e.g. "
                    f"RobustPurifier or AdversarialTrainer). Received: model of type {type(self.model).__name__}"
                )
        schedule = self.model.attack_schedule()
        self.target = schedule["eps"] if self.target is None else self.target
        self._ratio = schedule["step_ratio"]

    def eps_at(self, epoch):
        return self.start + (self.target - self.start) * min(1.0, (epoch + 1) / self.ramp_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        eps = self.eps_at(epoch)
        self.model.attack_eps.assign(eps)
        self.model.attack_step_size.assign(self._ratio * eps)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["attack_eps"] = float(keras.ops.convert_to_numpy(self.model.attack_eps))


class ComputeBudget(keras.callbacks.Callback):
    """Stops `fit` at the end of the epoch in which the process CPU time spent in `fit` reaches `cpu_seconds`.

    For comparisons "at equal training compute": train one model, read its
    `cpu_seconds` (also logged as `cpu_seconds` in the epoch logs), give the
    other the same budget. CPU time (all threads of this process) is steadier
    than wall time on a shared machine. `offset` adds seconds already spent
    (a resumed run).
    """

    def __init__(self, cpu_seconds=None, offset=0.0):
        super().__init__()
        check_number("cpu_seconds", cpu_seconds, minimum=0, allow_none=True)
        check_number("offset", offset, minimum=0)
        self.cpu_seconds = cpu_seconds
        self.offset = float(offset)
        self.spent = float(offset)

    def on_train_begin(self, logs=None):

        self._start = time.process_time()

    def on_epoch_end(self, epoch, logs=None):

        self.spent = self.offset + time.process_time() - self._start
        if logs is not None:
            logs["cpu_seconds"] = self.spent
        if self.cpu_seconds is not None and self.spent >= self.cpu_seconds:
            self.model.stop_training = True
