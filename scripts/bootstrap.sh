#!/usr/bin/env bash
# Set up what `make run` (bootstrap.sh run) or `make test` (bootstrap.sh test) needs on a
# fresh Debian machine: Debian packages when missing, then the virtualenv in .venv.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-run}"
PYTHON="${PYTHON:-python3}"
VENV=.venv

# The GStreamer RTSP test camera (SPEC §8) and ffmpeg/ffprobe for the media tests.
TEST_PACKAGES=(ffmpeg gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly)

missing=()
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  missing+=(python3)
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ "$mode" = test ]; then
  for pkg in "${TEST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
    echo "bootstrap: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# run: the kernel plus what `heldar worker` needs; test: dev tools (which include worker).
extra="[worker]"
[ "$mode" = test ] && extra="[dev]"
stamp="$VENV/.installed-${mode}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing heldar${extra} into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".${extra}"
  touch "$stamp"
fi
