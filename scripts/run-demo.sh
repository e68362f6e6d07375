#!/usr/bin/env bash
# Sets up, builds and runs the appliance on the demo clip; web UI on http://127.0.0.1:8080/
# It runs from a copy of the demo config in data/, so what the UI changes stays out of the
# repository (ADR 0006); delete data/ to start over. The first start creates the user `admin`
# and writes its password to data/initial-admin-password.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aegis/target}"
cargo build --release --locked -p aegis
mkdir -p data
# The copy's relative paths (../models, ../hil-tests, ../data) resolve the same from data/.
[ -f data/demo.yaml ] || cp config/demo.yaml config/demo-rules.yaml data/
echo "run-demo: log in at http://127.0.0.1:8080/ as admin; the first start writes the password to data/initial-admin-password" >&2
exec "$CARGO_TARGET_DIR/release/aegis" run --config data/demo.yaml
