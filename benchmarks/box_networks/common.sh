# Shared by run.sh and run_external.sh: every method, box only and 3 robot rounds, one thread.
PY=${PY:-.venv/bin/python}
D=../shared/data
OUT=benchmarks/box_networks
M=bifseg,cnn+crf,cnn,graphcut,random_walker,filled_box
bench() { name=$1; shift; rm -rf "$OUT/$name"; $PY -m InteractiveRefineLib benchmark --out "$OUT/$name" --methods $M --rounds 3 --threads 1 "$@"; }
