#!/usr/bin/env bash
# Twelfth session: a second pretraining stage (3000 steps, lr 5e-4, seed 1: a new episode stream) from the
# committed 4000-step encoder, then the ten setting-2 per-fold models from it (400 steps each, as shipped),
# into checkpoints/fewshot_s12 (not shipped). Resumable: run it again to continue. From the repository root.
set -euo pipefail
cd "$(dirname "$0")/../.."
C=checkpoints/fewshot_s12
mkdir -p $C
if [ ! -f $C/pretrained_external.json ]; then
  R=""; [ -f $C/pretrain/pretrained_external.json ] && R="--resume ../$C/pretrain/pretrained_external.json"
  # shellcheck disable=SC2086
  (cd FewShotSeg && ../.venv/bin/python -m FewShotSegLib --threads 1 pretrain --data ../../shared/data --steps 3000 \
     --batch 8 --lr 5e-4 --seed 1 --init ../checkpoints/fewshot/pretrained_external.json \
     --out ../$C/pretrained_external.json --checkpoint-dir ../$C/pretrain --checkpoint-minutes 3 $R)
fi
CKPT=$PWD/$C OUT=$PWD/$C/models SETTINGS=2 FOLD_STEPS=400 BATCH=8 DEVICE=cpu THREADS=1 DEFAULT_MODEL=0 \
    bash scripts/train_fewshot_all.sh
