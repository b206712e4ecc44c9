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

"""End the test process without running native libraries' exit-time destructors.

After the training tests, torch's oneDNN primitive cache is torn down by libc's exit handlers,
and freeing one cached JIT kernel (an AVX-512 convolution backward-weights reducer) sometimes
segfaults: `pytest --noconftest test/test_training.py` ended with exit 139 after "passed" in
some runs here (gdb: ``~reducer_2d_driver_f_s_32_t`` under ``primitive_cache_t::~primitive_cache_t``
in libtorch_cpu.so, called from ``__run_exit_handlers``), and CI once did after 396 passed. So
once pytest has written its report, the process leaves with pytest's own exit status through
``os._exit``. No test result and no line of the report is skipped; only that teardown is.

The same library also crashed *during* training tests here: SIGABRT inside a backward pass in
`test_init_weights_continues_the_shipped_weights_in_a_new_run` (1 of 6 repeated runs of
test_training.py, and once in a fresh-clone `.ci/run`), with oneDNN running its AVX-512 / AMX
kernels, as it does on this CPU. The tests therefore cap oneDNN at AVX2
(``ONEDNN_MAX_CPU_ISA``, read when torch first runs a oneDNN primitive, so it is set before any test
module imports torch). This changes which CPU kernels the tests use, not what they check; training
and inference outside the tests keep torch's defaults.
"""
import os
import sys

import pytest

os.environ.setdefault('ONEDNN_MAX_CPU_ISA', 'AVX2')

_exit_status: int | None = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status is None or hasattr(config, 'workerinput'):   # not a finished session (or an xdist worker)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)
