#!/usr/bin/env bash
# Installs ament_copyright (behind test/test_copyright.py) into a venv. It is the one ament linter
# with no PyPI wheel, so it comes from Debian's python3-ament-copyright package: the .deb is
# downloaded (not installed system-wide) and its pure-Python module and egg-info, whose entry points
# register the known licences and the pytest marker, are copied into the venv's site-packages.
# Usage: scripts/install_ament_copyright.sh VENV. Skips when ament_copyright already imports from
# VENV; where apt is unavailable it says so and exits 0 (test_copyright.py then skips).
set -euo pipefail

venv="$(cd "${1:?usage: install_ament_copyright.sh VENV}" && pwd)"
python="$venv/bin/python"
if "$python" -c 'import ament_copyright.main' 2>/dev/null; then
  echo "ament_copyright already importable from $venv; skipping"
  exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "apt-get/dpkg-deb not found: ament_copyright not installed, test/test_copyright.py will skip"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download python3-ament-copyright >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "python3-ament-copyright not downloadable (apt lists stale, not root to refresh them): skipping"
    exit 0
  fi
  echo "Refreshing apt package lists"
  apt-get update -qq
  apt-get download python3-ament-copyright >/dev/null 2>&1
fi
deb="$(ls python3-ament-copyright_*.deb)"
echo "Unpacking $deb into $venv"
dpkg-deb -x "$deb" root
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp -r root/usr/lib/python3/dist-packages/ament_copyright root/usr/lib/python3/dist-packages/ament_copyright-*.egg-info \
  "$site/"
"$python" -c 'import ament_copyright.main'
echo "ament_copyright installed into $site"
