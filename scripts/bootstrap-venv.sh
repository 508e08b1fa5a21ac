#!/usr/bin/env bash
# Create .venv with Python >= 3.11 on a fresh Debian machine (installs python3-venv when missing).
set -euo pipefail
venv=${1:-.venv}
[ -x "$venv/bin/python" ] && exit 0
py=$(command -v python3.11 || command -v python3)
if ! "$py" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "python venv support missing: installing Debian's python3-venv" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$py" -m venv "$venv"
  else
    echo "error: '$py -m venv' failed; install python3-venv (Debian) and retry" >&2
    exit 1
  fi
fi
