#!/usr/bin/env bash
# Installs everything the appliance and its tests need on Debian 12, idempotently.
#   - system packages: FFmpeg dev libraries, clang (bindgen), GStreamer RTSP server (tests), ffmpeg CLI
#     (bench), pip and venv (PyPI downloads, the tracker evaluation), mosquitto (MQTT tests),
#     chromium (web UI tests)
#   - the ONNX Runtime shared library, taken from the PyPI `onnxruntime` wheel
# Re-running it is cheap: each step checks before it acts.
set -euo pipefail

ORT_VERSION=1.31.1
CACHE="${AEGIS_CACHE:-$HOME/.cache/aegis}"
ORT_DIR="$CACHE/onnxruntime-$ORT_VERSION"

APT_PACKAGES=(
  pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev
  ffmpeg python3-pip python3-venv mosquitto mosquitto-clients chromium
  python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$ORT_DIR/libonnxruntime.so" ]; then
  echo "setup: fetching onnxruntime $ORT_VERSION from PyPI" >&2
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$ORT_VERSION"
  mkdir -p "$ORT_DIR"
  python3 - "$tmp" "$ORT_DIR" <<'PY'
import glob, sys, zipfile, os
wheel = glob.glob(os.path.join(sys.argv[1], "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if base.startswith("libonnxruntime.so"):
            with open(os.path.join(sys.argv[2], "libonnxruntime.so"), "wb") as out:
                out.write(z.read(name))
PY
  rm -rf "$tmp"
fi
echo "$ORT_DIR/libonnxruntime.so"
