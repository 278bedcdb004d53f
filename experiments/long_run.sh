#!/usr/bin/env bash
# The long run of docs/robust.md (issue: the top of the AutoAttack MNIST table): a robust purifier trained
# with the TRADES objective in bfloat16 for 40 epochs on 59,000 MNIST digits in front of a frozen model C,
# and Madry adversarial training of the same C beside it (56 epochs), each with the held-out PGD-20 monitor on
# the last 1,000 training digits, the cumulative CPU seconds of every epoch and a snapshot every 5 epochs.
# Measured on the 2-core machine (2026-12-07): Madry's 56 epochs took 2.99 CPU-hours (about 190 CPU s an epoch)
# and the purifier's 40 took 4.52 (about 405 CPU s an epoch): the two curves are compared at equal CPU-hours up
# to Madry's end.
#
# Both commands resume from their backups (<out>.backup/), so the script can be rerun after any
# interruption; run it from the repository root with TFDEFENSE_DATA_DIR set (or keras' mnist.npz cached):
#
#     bash experiments/long_run.sh            # both runs, one core each
#     EPOCHS=60 MADRY_EPOCHS=84 OUT=experiments/long_run60 bash experiments/long_run.sh  # longer, elsewhere
#
# Outputs in experiments/long_run/ (git-ignored unless added on purpose): model_c.keras, trades.keras,
# madry.keras, their .json summaries (epoch_log: monitor_pgd, monitor_clean, cpu_seconds per epoch) and
# the snapshots <name>.epoch<E>.keras that docs/robust.md's curve evaluates. experiments/long_run_curve.py
# prints and plots both trainings against CPU-hours (from their backups while they run). A backup resumes only
# with the same settings, the classifier's absolute path among them: rerun from the same checkout path.
set -euo pipefail
EPOCHS=${EPOCHS:-40}
MADRY_EPOCHS=${MADRY_EPOCHS:-56}
OUT=${OUT:-experiments/long_run}
mkdir -p "$OUT"
if [ ! -f "$OUT/model_c.keras" ]; then
  python -m tfdefense.train classifier --model C --dataset mnist --epochs 6 --schedule cosine --seed 0 \
      --holdout 1000 --out "$OUT/model_c.keras"
fi
common=(--dataset mnist --eps 0.3 --ramp-epochs 2 --precision bf16 --holdout 1000 --save-every 5 --eval-suite none)
python -m tfdefense.train purifier --kind robust --classifier "$OUT/model_c.keras" "${common[@]}" --epochs "$EPOCHS" \
    --attack-loss kl --lambda-trades 6 --lambda-adv-cls 0 --out "$OUT/trades.keras" > "$OUT/trades.log" 2>&1 &
purifier=$!
python -m tfdefense.train adversarial --classifier "$OUT/model_c.keras" "${common[@]}" --epochs "$MADRY_EPOCHS" \
    --out "$OUT/madry.keras" > "$OUT/madry.log" 2>&1 &
madry=$!
wait $purifier
wait $madry
