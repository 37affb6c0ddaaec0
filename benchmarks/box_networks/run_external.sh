#!/usr/bin/env bash
# External structures the box network never trained on, every method, box only and 3 robot rounds. Sized
# for a shared 2-core CPU session: subsets of subjects and slices (listed below). Run from the repository
# root: bash benchmarks/box_networks/run_external.sh
set -euo pipefail
source benchmarks/box_networks/common.sh
# hippocampus: the first 6 of the split's 30 held-out subjects, every 4th slice in 2D
HIP=$($PY -c "import json; print(','.join(json.load(open('InteractiveRefine/Resources/Splits/msd_hippocampus.json'))['test'][:6]))")
bench hippocampus --dataset $D/msd-hippocampus --cases "$HIP" --slice-step 4
# spinal cord grey matter (2) and white matter (1) of the T2* and MT contrasts (validation structures)
bench cord_gm_wm --dataset $D/sct-spinalcord --cases sct_errsm30_t2s,sct_errsm30_mt1
# brain tumour (evaluation only): one time point of each of 3 patients, every 3rd slice
bench tumour --dataset $D/tcia-brain-tumor-progression --cases PGBM001_04021992,PGBM003_03291995,PGBM008_03311992 --slice-step 3
# fetal cortex (5) and corpus callosum (8) on one operated atlas (never trained on), every 12th slice
$PY $HERE/fetal_view.py runs/views/fetal GA31_operated
bench fetal_cortex_cc --dataset runs/views/fetal --labels 5,8 --slice-step 12
