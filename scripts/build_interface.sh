#!/usr/bin/env bash
# Build a ROS 2 interface package from ros_interfaces/ into a venv that holds PyPI's ROS 2 Jazzy
# wheels, with the wheels' rosidl toolchain: tf2_msgs (absent from PyPI) and this project's own
# robot_pose_estimator_msgs. On a ROS install colcon builds robot_pose_estimator_msgs instead
# (ros_interfaces/tf2_msgs has a COLCON_IGNORE: there the real tf2_msgs is installed).
# Usage: scripts/build_interface.sh VENV PACKAGE MESSAGE. Skips the build when PACKAGE.msg.MESSAGE
# already imports from VENV and a publisher of it can be created.
set -euo pipefail
venv="$(cd "${1:?usage: build_interface.sh VENV PACKAGE MESSAGE}" && pwd)"
package="${2:?usage: build_interface.sh VENV PACKAGE MESSAGE}"
message="${3:?usage: build_interface.sh VENV PACKAGE MESSAGE}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$venv/bin/python"
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
probe="from $package.msg import $message; import rclpy; rclpy.init(); n = rclpy.create_node('interface_probe'); n.create_publisher($message, '/interface_probe', 1); n.destroy_node(); rclpy.shutdown()"

# The interface files' digest: a .msg changed since the last build means building again.
digest="$(cd "$repo_root/ros_interfaces/$package" && find . -type f -not -path './build/*' | LC_ALL=C sort \
  | xargs sha256sum | sha256sum | cut -d' ' -f1)"
stamp="$venv/build/$package.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ] && "$python" -c "$probe" >/dev/null 2>&1; then
  echo "$package already built from these interface files and usable from $venv; skipping build"
  exit 0
fi

build_dir="$venv/build/$package"
rm -rf "$build_dir"
mkdir -p "$build_dir"
echo "Configuring $package in $build_dir"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH"
# The wheels' message packages' CMake configs name the include dir of the Python that built them, so
# CMake reports 'Generate step failed' yet writes a working Makefile. Judge by the Makefile and by
# the import test at the end, not by cmake's exit code.
cmake -S "$repo_root/ros_interfaces/$package" -B "$build_dir" \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DPython3_EXECUTABLE="$python" \
  -DBUILD_TESTING=OFF >"$build_dir/cmake.log" 2>&1 || true
[ -f "$build_dir/Makefile" ] || { tail -40 "$build_dir/cmake.log"; exit 1; }
echo "Building $package"
make -C "$build_dir" -j"$(nproc)" install >"$build_dir/make.log" 2>&1 || { tail -40 "$build_dir/make.log"; exit 1; }

# rosidl installs the Python package under the prefix's lib/pythonX.Y/site-packages; link it into the
# venv's site-packages if the two differ (e.g. lib64 layouts).
installed="$venv/lib/python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages/$package"
if [ ! -d "$site/$package" ] && [ -d "$installed" ]; then
  ln -s "$installed" "$site/$package"
fi
"$python" -c "$probe" && echo "$digest" >"$stamp" && echo "$package built and usable"
