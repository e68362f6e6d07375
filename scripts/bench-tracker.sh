#!/usr/bin/env bash
# Tracker evaluation (docs/BENCHMARKS.md): our tracker against a peer ByteTrack from PyPI on
# generated sequences, HOTA/MOTA/IDF1 by TrackEval, and throughput, all in one run. The Python
# tools are pinned and live in a virtual environment under ~/.cache/aegis (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
CACHE="${AEGIS_CACHE:-$HOME/.cache/aegis}"
VENV="$CACHE/bench-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  trackeval==1.3.0 trackers==2.6.1 supervision==0.31.2 numpy==2.4.6 scipy==1.17.1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
cargo build -q --release --locked -p aegis
"$VENV/bin/python" scripts/tracker_eval.py --aegis "$CARGO_TARGET_DIR/release/aegis" \
  --work "${TMPDIR:-/tmp}/aegis-tracker-eval"
