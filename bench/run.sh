#!/usr/bin/env bash
# Runs the peer benchmark (../shared/bench/peers.py) with the Shoal adapter beside hnswlib on the default
# synthetic set (N=100k, D=128, cosine), float and int8-quantized. Usage: bench/run.sh [extra peers.py args]
# Results: bench/peers-100k.json; copy the table into bench/RESULTS.md with the command.
set -euo pipefail
cd "$(dirname "$0")/.."
make develop >/dev/null
.venv/bin/pip install --quiet hnswlib psutil
PEERS=../shared/bench/peers.py
[ -f "$PEERS" ] || { echo "bench/run.sh: $PEERS not found (the shared bench harness)"; exit 1; }
exec .venv/bin/python "$PEERS" --extra-adapters bench/shoal_adapter.py --systems shoal,shoal-int8,hnswlib \
    --out bench/peers-100k.json "$@"
