# Copyright 2026 robot_pose_estimator contributors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""What machine a number was measured on: the CPU model goes beside every benchmark and model card.

Numbers that depend on floating point (ONNX Runtime's kernels, a path tracer) can differ between
CPU models even for identical inputs, so a result is only comparable with one from the same CPU.
"""
from __future__ import annotations

import os
from pathlib import Path
import platform


def cpu_name() -> str:
    """Return the CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> str:
    """Describe the machine in one line: architecture, CPU model and count, Python version."""
    return (f'{platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs, '
            f'{platform.python_implementation()} {platform.python_version()}')
