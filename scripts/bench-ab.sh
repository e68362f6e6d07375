#!/usr/bin/env bash
# Two revisions of the appliance on the demo clip, alternating in one run: glass-to-event, its
# parts, and each MQTT event's time from its commit to mosquitto_sub's receipt (the demo rules,
# publishing to a local mosquitto). For changes whose effect is smaller than the VM's drift
# between runs.
# Usage: bash scripts/bench-ab.sh REV_A REV_B [ROUNDS (2)] [SECONDS (60)]
# Example (ONNX Runtime's spinning stopping with each run, docs/BENCHMARKS.md):
#   bash scripts/bench-ab.sh eeb63ca cf93e9f
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,8p' "$0" >&2; exit 64; }
eval "$(bash scripts/setup.sh)"
CACHE="${AEGIS_CACHE:-$HOME/.cache/aegis}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/tree" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for rev in "$1" "$2"; do
  git worktree add -q --detach "$WORK/tree" "$rev"
  (cd "$WORK/tree" && cargo build -q --release --locked -p aegis)
  cp "$CARGO_TARGET_DIR/release/aegis" "$WORK/aegis-$rev"
  git worktree remove --force "$WORK/tree"
done
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mport" > "$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >/dev/null 2>&1 &
broker=$!
sleep 0.5
for round in $(seq 1 "${3:-2}"); do
  for rev in "$1" "$2"; do
    cfg="$WORK/$rev-$round.yaml"
    sed -e "s#\.\./data#$WORK/data-$rev-$round#" -e "s#\.\./#$PWD/#g" \
      -e "s#^rules: #rules: $PWD/config/#" config/demo.yaml > "$cfg"
    echo "mqtt: {host: 127.0.0.1, port: $mport, client_id: ab-$round}" >> "$cfg"
    mosquitto_sub -h 127.0.0.1 -p "$mport" -t aegis/events -F '%U %p' > "$WORK/sub.txt" &
    sub=$!
    "$WORK/aegis-$rev" bench pipeline --config "$cfg" --seconds "${4:-60}" \
      --events-out "$WORK/committed.jsonl" 2>/dev/null > "$WORK/report.json"
    sleep 1
    kill "$sub"
    python3 scripts/bench_row.py "$WORK/report.json" "$WORK/committed.jsonl" "$WORK/sub.txt" \
      round="$round" rev="$rev"
  done
done
kill "$broker"
