#!/usr/bin/env bash
# Fill data/backgrounds/ with photographs and surface textures from Debian packages, for
# `render --backgrounds` (training) and the cross-domain benchmark (evaluation). Idempotent: a
# package already unpacked is skipped. Not run by CI; needs apt-get (any Debian or Ubuntu) and the
# project's .venv (scripts/setup.sh). Nothing is installed system-wide: the .debs are downloaded
# and unpacked into a temporary folder, and only JPEG copies of their images are kept.
#
#   data/backgrounds/train/<package>/   photos and textures that training may see
#   data/backgrounds/eval/<package>/    photos and textures kept for the cross-domain benchmark only
#
# The split is by package, so no picture (or another resolution of it) is on both sides. Each
# package's licence is in its copyright file, copied beside its images as COPYRIGHT.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo_root/data/backgrounds}"
python="$repo_root/.venv/bin/python"
[ -x "$python" ] || { echo "No .venv: run scripts/setup.sh first." >&2; exit 1; }

# package  split  max_side  what
packages=(
  "gnome-backgrounds            train 1024 photos"
  "plasma-workspace-wallpapers  train 1024 photos"
  "ukui-wallpapers              train 1024 photos"
  "sway-backgrounds             train 1024 photos"
  "ufoai-textures               train 512  textures"
  "mate-backgrounds             eval  1024 photos"
  "lomiri-wallpapers-20.04      eval  1024 photos"
  "nexuiz-textures              eval  512  textures"
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for entry in "${packages[@]}"; do
  read -r package split max_side kind <<<"$entry"
  target="$out/$split/$package"
  if [ -f "$target/.done" ]; then
    echo "==> $package: already in $target"
    continue
  fi
  echo "==> $package ($kind, $split): downloading"
  (cd "$work" && apt-get download "$package" >/dev/null 2>&1) || {
    echo "    apt-get download $package failed; run 'apt-get update' (as root) and retry" >&2; exit 1; }
  unpacked="$work/$package"
  mkdir -p "$unpacked"
  dpkg-deb -x "$work/${package}"_*.deb "$unpacked"
  # Game texture packages ship their images inside .pk3 (zip) archives.
  find "$unpacked" -name '*.pk3' -print0 | while IFS= read -r -d '' archive; do
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$archive" "$unpacked/pk3"
  done
  rm -rf "$target"
  mkdir -p "$target"
  "$python" -m robot_pose_estimator.rendering.backgrounds "$unpacked" "$target" "$max_side"
  cp "$unpacked/usr/share/doc/$package/copyright" "$target/COPYRIGHT" 2>/dev/null || true
  rm -rf "$unpacked" "$work/${package}"_*.deb
  touch "$target/.done"
done
echo "Backgrounds in $out: $(find "$out/train" -name '*.jpg' | wc -l) for training, $(find "$out/eval" -name '*.jpg' | wc -l) held out for evaluation"
