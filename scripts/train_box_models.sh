#!/usr/bin/env bash
# Retrains every shipped box model from scratch (InteractiveRefine/Resources/Models/pnet2d.json and
# box3d.json: one class-agnostic 2D network, also run slice by slice in 3D boxes) on every dataset of
# ../shared/data (recipe: InteractiveRefineLib/training/box_sources.py). CUDA when present: the longer schedule,
# samples drawn ahead by the CPU's other cores (--sample-workers); on a 2-core CPU pass --stop-after-minutes and
# resume later with --resume.
# The recipe is the current one (unions of touching structures, pseudo-objects by group, the CHAOS validation
# kidneys in the validation). The shipped weights (since session 16) are one run of this script on a lent GPU,
# stopped at 14,374 of its 20,000 iterations (benchmarks/box_networks/gpu_s16; before, a chain of CPU runs:
# docs/box_networks.md, "How the shipped weights were made").
#   bash scripts/train_box_models.sh [extra train-box args]     (add --resume to continue a stopped run)
# Its checkpoints go to checkpoints/box2d_scratch/ (train-box refuses to start from scratch over a checkpoint; the
# committed CPU and GPU runs keep theirs in checkpoints/box2d*/).
# TRAIN_BOX replaces the command (the GPU machine's wrapper, gpu_s16/device_train.py). Each run installs its best
# model into the shipped Resources (--install) with the shipped cuts (2D boxes 0.3, 3D boxes the network's own 0.5),
# which were chosen on validation for the networks shipped so far: re-check them for a new network
# (benchmarks/box_networks/select_threshold.py, s17_cut3d/) before it ships. To continue the committed GPU run
# without installing, see gpu_s16/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TRAIN_BOX=${TRAIN_BOX:-"$PY -m InteractiveRefineLib train-box"}
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    CORES=$($PY -c "import os; print(len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count())")
    ITERS=20000; BATCH=32; THREADS=2; VAL_EVERY=1000
    EXTRA=(--sample-workers $(( CORES > 4 ? CORES - 2 : 2 )))
else
    ITERS=2400; BATCH=16; THREADS=1; VAL_EVERY=300; EXTRA=(--sample-workers 0)  # (bash < 4.4: no empty array)
fi
$TRAIN_BOX --out runs/box2d/pnet2d_box.json --run-dir checkpoints/box2d_scratch \
    --max-iters $ITERS --batch $BATCH --threads $THREADS --val-every $VAL_EVERY --install --install-cut2d 0.3 "${EXTRA[@]}" "$@"
