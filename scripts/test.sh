#!/usr/bin/env bash
# Sets up everything and runs every test: formatting, lints (the edge, core and combined builds),
# all crates, both detector backends.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aegis/target}"
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
# The core role alone must build without the appliance's native dependencies.
cargo clippy -p aegis --all-targets --no-default-features --features core --locked -- -D warnings
cargo test --workspace --all-features --locked
