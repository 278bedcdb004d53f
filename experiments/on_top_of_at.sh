#!/usr/bin/env bash
# Purification on top of adversarial training at equal total CPU time (docs/robust.md). Needs the long run's
# Madry training (experiments/long_run.sh) to have passed epoch TO: its snapshot madry.epoch<FROM>.keras gets
# a robust purifier trained in front of it, frozen and with the classifier fine-tuned jointly, each capped at
# the CPU seconds that Madry spent between epochs FROM and TO (read from its epoch log), so that
#     Madry to FROM + purifier  ~  Madry to TO          (same total training CPU, model C's own training aside).
# ComputeBudget stops at the end of the epoch that reaches the cap, so a purifier may overshoot by part of an
# epoch: the summaries' cpu_seconds give the exact totals to report. Then the three evaluations, standard
# suite on the first N test digits. Every command resumes after an interruption; rerun the script.
#
#     FROM=5 TO=10 EPOCHS=4 bash experiments/on_top_of_at.sh      # from the repository root
set -euo pipefail
FROM=${FROM:-5}
TO=${TO:-10}
EPOCHS=${EPOCHS:-4}
N=${N:-1000}
OUT=${OUT:-experiments/long_run}
RUNS=${RUNS:-$OUT/runs}
madry_log=$OUT/madry.json
[ -f "$madry_log" ] || madry_log=$OUT/madry.keras.backup
budget=$(python - "$madry_log" "$FROM" "$TO" <<'EOF'
import sys
sys.path.insert(0, "experiments")
from long_run_curve import cpu_seconds_between, epoch_log
print(f"{cpu_seconds_between(epoch_log(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])):.0f}")
EOF
)
echo "CPU budget of each purifier: ${budget} s (Madry epochs $FROM to $TO)"
base=$OUT/madry.epoch$FROM.keras
common=(--kind robust --classifier "$base" --dataset mnist --eps 0.3 --ramp-epochs 1 --precision bf16
    --holdout 1000 --eval-suite none --epochs "$EPOCHS" --max-cpu-seconds "$budget")
frozen=$OUT/on_top_madry$FROM.keras
tuned=$OUT/on_top_madry$FROM.tuned.keras
[ -f "$frozen" ] || python -m tfdefense.train purifier "${common[@]}" --out "$frozen"
[ -f "$tuned" ] || python -m tfdefense.train purifier "${common[@]}" --finetune-classifier --out "$tuned"
evaluate=(python -m tfdefense.evaluate --dataset mnist --eps 0.3 --n "$N" --quiet)
"${evaluate[@]}" --classifier "$OUT/madry.epoch$TO.keras" --out "$RUNS/madry-epoch$TO"
"${evaluate[@]}" --classifier "$base" --purifier "$frozen" --out "$RUNS/on-top-madry$FROM"
"${evaluate[@]}" --classifier "$OUT/on_top_madry$FROM.tuned.classifier.keras" --purifier "$tuned" \
    --out "$RUNS/on-top-madry$FROM-tuned"
