#!/usr/bin/env bash
# Pretrain the FewShotSeg network on external data, then retrain every shipped FewShotSeg model from it:
# the CHAOS per-fold models of settings 1 and 2 (5 folds x upper/lower) and the default model (all CHAOS
# patients but chaos_8 and chaos_36, the embedded sample). Uses CUDA when present.
#
# Resumable: every run checkpoints into $CKPT every few minutes; running the script again continues each
# unfinished model from its checkpoint and skips the finished ones. Models are written to $OUT (not to the
# shipped FewShotSeg/Resources/Models): evaluate them (printed at the end) and copy them over only if better.
#
# Environment: DATA (default ../shared/data), OUT (checkpoints/fewshot/models), CKPT (checkpoints/fewshot),
# PRETRAIN_STEPS, FOLD_STEPS, DEFAULT_STEPS, BATCH, DEVICE (auto), SETTINGS ("1 2"), FOLDS ("0 1 2 3 4"),
# ORGAN_GROUPS ("upper lower"), THREADS (0 = torch default; 1 leaves a core free), PRETRAIN_ARGS (extra pretrain options, e.g. "--max-cases 1 --slice-step 8" for a smoke test),
# DEFAULT_MODEL (1; 0 skips the default model, e.g. when only the per-fold models are compared).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
DATA="${DATA:-$(cd "$ROOT/.." && pwd)/shared/data}"
OUT="${OUT:-$ROOT/checkpoints/fewshot/models}"
CKPT="${CKPT:-$ROOT/checkpoints/fewshot}"
DEVICE="${DEVICE:-auto}"
SETTINGS="${SETTINGS:-1 2}"
FOLDS="${FOLDS:-0 1 2 3 4}"
ORGAN_GROUPS="${ORGAN_GROUPS:-upper lower}"
PRETRAIN_ARGS="${PRETRAIN_ARGS:-}"
THREADS="${THREADS:-0}"
DEFAULT_MODEL="${DEFAULT_MODEL:-1}"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && [ "$DEVICE" != cpu ]; then
    ON_GPU=1; : "${PRETRAIN_STEPS:=30000}" "${FOLD_STEPS:=10000}" "${DEFAULT_STEPS:=10000}" "${BATCH:=16}"
else
    ON_GPU=0; : "${PRETRAIN_STEPS:=4000}" "${FOLD_STEPS:=1000}" "${DEFAULT_STEPS:=1000}" "${BATCH:=8}"
fi
echo "device: $([ $ON_GPU = 1 ] && echo cuda || echo cpu); pretrain $PRETRAIN_STEPS, per-fold $FOLD_STEPS," \
     "default $DEFAULT_STEPS steps, batch $BATCH; models -> $OUT; checkpoints -> $CKPT"
cd "$ROOT/FewShotSeg"
run() { "$PY" -m FewShotSegLib --threads "$THREADS" "$@"; }
PRE="$CKPT/pretrained_external.json"

# 1. encoder pretraining on external data only (never CHAOS, never the tumour set)
if [ ! -f "$PRE" ]; then
    # shellcheck disable=SC2086
    run pretrain $PRETRAIN_ARGS --data "$DATA" --steps "$PRETRAIN_STEPS" --batch "$BATCH" --out "$PRE" \
        --checkpoint-dir "$CKPT/pretrain" --resume "$( [ -f "$CKPT/pretrain/pretrained_external.json" ] && \
        echo "$CKPT/pretrain/pretrained_external.json" )" --device "$DEVICE"
fi

# 2. per-fold models of each setting, started from the pretrained weights
for setting in $SETTINGS; do
    for fold in $FOLDS; do
        for group in $ORGAN_GROUPS; do
            name="chaos_s${setting}_f${fold}_${group}"
            [ -f "$OUT/$name.json" ] && { echo "$name: done"; continue; }
            run train --dataset "$DATA/chaos-t2spir" --setting "$setting" --folds "$fold" --groups "$group" \
                --steps "$FOLD_STEPS" --batch "$BATCH" --init "$PRE" --out "$OUT" \
                --checkpoint-dir "$CKPT/train" --resume "$CKPT/train" --device "$DEVICE"
        done
    done
done

# 3. the default model (panel and demo): every CHAOS patient but the two of the embedded sample
if [ "$DEFAULT_MODEL" != 0 ] && [ ! -f "$OUT/default.json" ]; then
    run train --dataset "$DATA/chaos-t2spir" --default --exclude chaos_8 chaos_36 --steps "$DEFAULT_STEPS" \
        --batch "$BATCH" --init "$PRE" --out "$OUT" --checkpoint-dir "$CKPT/train" --resume "$CKPT/train" \
        --device "$DEVICE"
fi

echo "Evaluate before shipping (compare with the shipped models' summary.md):"
for setting in $SETTINGS; do
    echo "  (cd FewShotSeg && $PY -m FewShotSegLib evaluate --dataset $DATA/chaos-t2spir --setting $setting" \
         "--models $OUT --out $ROOT/benchmarks/fewshot_chaos_s${setting}_pretrained)"
done
