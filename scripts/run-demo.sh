#!/usr/bin/env bash
# Sets up, builds and runs the appliance on the demo clip; web UI on http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_LIB=$(bash scripts/setup.sh | tail -n 1)
export AEGIS_ORT_LIB="$ORT_LIB"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aegis/target}"
cargo build --release --locked -p aegis
exec "$CARGO_TARGET_DIR/release/aegis" run --config config/demo.yaml
