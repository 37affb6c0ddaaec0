#!/usr/bin/env bash
# A candidate box network on every benchmark of run.sh and run_external.sh (same cases, every method), written
# to benchmarks/box_networks/NAME/ with its summary.md; the CHAOS run and the external ones side by side (two
# processes of one thread). Evaluation data only: nothing here chooses anything. From the repository root:
#   bash benchmarks/box_networks/candidate.sh MODELS_FOLDER NAME
# (each method's robot scribbles come from one generator per case shared by the methods in turn, so the
# classical methods' rounds too differ a little from the shipped run's)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bash benchmarks/box_networks/candidate.sh MODELS_FOLDER NAME" >&2; exit 2; }
export ADAPTIVESEG_MODELS=$1
source benchmarks/box_networks/common.sh
SHIPPED=$OUT
OUT=$OUT/$2
mkdir -p "$OUT"
HIP=$($PY -c "import json; print(','.join(json.load(open('InteractiveRefine/Resources/Splits/msd_hippocampus.json'))['test'][:6]))")
$PY $SHIPPED/fetal_view.py runs/views/fetal GA31_operated
bench chaos --dataset $D/chaos-t2spir > "$OUT/chaos.log" 2>&1 &
chaos=$!
( bench hippocampus --dataset $D/msd-hippocampus --cases "$HIP" --slice-step 4
  bench cord_gm_wm --dataset $D/sct-spinalcord --cases sct_errsm30_t2s,sct_errsm30_mt1
  bench tumour --dataset $D/tcia-brain-tumor-progression \
      --cases PGBM001_04021992,PGBM003_03291995,PGBM008_03311992 --slice-step 3
  bench fetal_cortex_cc --dataset runs/views/fetal --labels 5,8 --slice-step 12 ) > "$OUT/external.log" 2>&1 &
external=$!
wait $chaos  # each on its own: a failed benchmark stops the script (set -e) before the report
wait $external
$PY $SHIPPED/report.py "$OUT"
