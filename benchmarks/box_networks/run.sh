#!/usr/bin/env bash
# Box networks (issue 11): every method, box only and 3 robot rounds, on the CHAOS test patients (unseen
# kidneys; seen liver/spleen) and on external structures the networks never trained on. Evaluation data
# only: nothing here chooses anything. Run from the repository root: bash benchmarks/box_networks/run.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
D=../shared/data
OUT=benchmarks/box_networks
M=bifseg,cnn+crf,cnn,graphcut,random_walker,filled_box
T="--threads 2"
bench() { name=$1; shift; rm -rf "$OUT/$name"; $PY -m InteractiveRefineLib benchmark --out "$OUT/$name" --methods $M --rounds 3 $T "$@"; }
bench chaos --dataset $D/chaos-t2spir
# hippocampus: the split's 30 held-out subjects, first 10, every 3rd slice in 2D
HIP=$($PY -c "import json; print(','.join(json.load(open('InteractiveRefine/Resources/Splits/msd_hippocampus.json'))['test'][:10]))")
bench hippocampus --dataset $D/msd-hippocampus --cases "$HIP" --slice-step 3
# spinal cord grey matter (2) and white matter (1) of the T2* and MT contrasts (validation structures)
bench cord_gm_wm --dataset $D/sct-spinalcord --cases sct_errsm30_t2s,sct_errsm30_mt1
# fetal cortex (5) and corpus callosum (8) on two operated atlases (never trained on), every 8th slice
$PY $OUT/fetal_view.py runs/views/fetal GA27_operated GA31_operated
bench fetal_cortex_cc --dataset runs/views/fetal --labels 5,8 --slice-step 8
# brain tumour (evaluation only), all 7 time points
bench tumour --dataset $D/tcia-brain-tumor-progression --cases all --slice-step 2
