#!/usr/bin/env bash
# Build the tf2_msgs interface (absent from PyPI) into a venv that holds PyPI's ROS 2 Jazzy wheels.
# Usage: scripts/build_tf2_msgs.sh VENV. Skips the build when tf2_msgs already imports from VENV.
set -euo pipefail
venv="$(cd "${1:?usage: build_tf2_msgs.sh VENV}" && pwd)"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$venv/bin/python"
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

if "$python" -c 'from tf2_msgs.msg import TFMessage; import rclpy; rclpy.init(); n = rclpy.create_node("tf2_msgs_probe"); n.create_publisher(TFMessage, "/tf_probe", 1); n.destroy_node(); rclpy.shutdown()' >/dev/null 2>&1; then
  echo "tf2_msgs already importable and usable from $venv; skipping build"
  exit 0
fi

build_dir="$venv/build/tf2_msgs"
rm -rf "$build_dir"
mkdir -p "$build_dir"
echo "Configuring tf2_msgs in $build_dir"
export AMENT_PREFIX_PATH="$venv"
export CMAKE_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH"
# The wheels' geometry_msgs CMake config names the include dir of the Python that built them, so
# CMake reports 'Generate step failed' yet writes a working Makefile. Judge by the Makefile and by
# the import test at the end, not by cmake's exit code.
cmake -S "$repo_root/ros_interfaces/tf2_msgs" -B "$build_dir" \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DPython3_EXECUTABLE="$python" \
  -DBUILD_TESTING=OFF >"$build_dir/cmake.log" 2>&1 || true
[ -f "$build_dir/Makefile" ] || { tail -40 "$build_dir/cmake.log"; exit 1; }
echo "Building tf2_msgs"
make -C "$build_dir" -j"$(nproc)" install >"$build_dir/make.log" 2>&1 || { tail -40 "$build_dir/make.log"; exit 1; }

# rosidl installs the Python package under the prefix's lib/pythonX.Y/site-packages; link it into the
# venv's site-packages if the two differ (e.g. lib64 layouts).
installed="$venv/lib/python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')/site-packages/tf2_msgs"
if [ ! -d "$site/tf2_msgs" ] && [ -d "$installed" ]; then
  ln -s "$installed" "$site/tf2_msgs"
fi
"$python" -c 'from tf2_msgs.msg import TFMessage; TFMessage(); print("tf2_msgs built and importable")'
