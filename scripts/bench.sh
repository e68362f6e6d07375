#!/usr/bin/env bash
# The end-to-end benchmarks of docs/BENCHMARKS.md, each beside its reference in the same run:
#   decode     `aegis bench decode` vs the ffmpeg CLI decoding the same clip
#   detector   `aegis bench detector` (ort, tract) vs onnxruntime's Python API, same model,
#              same image, same thread count
#   pipeline   `aegis bench pipeline` on the demo clip: glass-to-event latency and memory
# Run it on an otherwise idle machine; never while something is building.
# Usage: bash scripts/bench.sh [decode|detector|pipeline]...   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_LIB=$(bash scripts/setup.sh | tail -n 1)
export AEGIS_ORT_LIB="$ORT_LIB"
CACHE="${AEGIS_CACHE:-$HOME/.cache/aegis}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
VENV="$CACHE/bench-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check onnxruntime==1.31.1 numpy==2.4.6
cargo build -q --release --locked -p aegis --features tract
AEGIS="$CARGO_TARGET_DIR/release/aegis"
CLIP=hil-tests/fixtures/vtest_h264.mp4
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

bench_decode() {
  # Two comparisons, three alternating rounds each: decoding alone (ours samples nothing with
  # --detect-fps 0), and decoding with ours' work per sampled frame (5 fps, one 512x512 RGB
  # resize), which the CLI does with a filter chain.
  local same_work="fps=5,scale=512:512:flags=fast_bilinear,format=rgb24"
  for round in 1 2 3; do
    for fps in 0 5; do
      vf=(); [ "$fps" = 0 ] || vf=(-vf "$same_work")
      cli=$(ffmpeg -hide_banner -nostdin -benchmark -i "$CLIP" "${vf[@]}" -f null - 2>&1 |
        sed -n 's/.*rtime=\([0-9.]*\)s.*/\1/p')
      ours=$("$AEGIS" bench decode "$CLIP" --detect-fps "$fps" | tr -d '\n ')
      echo "{\"round\": $round, \"detect_fps\": $fps, \"ffmpeg_cli_seconds\": $cli, \"ours\": $ours}"
    done
  done
}

bench_detector() {
  for model in centernet_mbv3_coco80 ssdlite_mbv2_person; do
    size=$(sed -n 's/^  width: //p' "models/$model.yaml")x$(sed -n 's/^  height: //p' "models/$model.yaml")
    # Frame 5 of the clip at the model's input size, as the detector tests use.
    ffmpeg -loglevel error -nostdin -i "$CLIP" -vf "select=eq(n\,5),scale=${size/x/:}:flags=bilinear" \
      -frames:v 1 -pix_fmt rgb24 -f rawvideo -y "$WORK/$model.rgb"
    # ort at 2 intra-op threads; tract runs on one thread, so its reference does too.
    for pair in ort:2 tract:1; do
      backend=${pair%:*} threads=${pair#*:}
      ref=$("$VENV/bin/python" scripts/ort_reference.py --model "models/$model.yaml" \
        --rgb "$WORK/$model.rgb" --threads "$threads")
      ours=$("$AEGIS" bench detector --model "models/$model.yaml" --backend "$backend" \
        --threads "$threads" --rgb "$WORK/$model.rgb" | tr -d '\n')
      echo "{\"model\": \"$model\", \"backend\": \"$backend\", \"reference\": $ref, \"ours\": $ours}"
    done
  done
}

bench_pipeline() {
  sed -e "s#\.\./data#$WORK/data#" -e "s#\.\./#$PWD/#g" config/demo.yaml > "$WORK/bench.yaml"
  "$AEGIS" bench pipeline --config "$WORK/bench.yaml" --seconds 80
}

for what in "${@:-decode detector pipeline}"; do
  for w in $what; do "bench_$w"; done
done
