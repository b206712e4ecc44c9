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

"""Synthetic images of a robot: what training data and evaluation bags share.

Randomisation and sensor effects, photo backgrounds, detailed meshes, scene props, and the two
renderers: pybullet's TinyRenderer for training and a physically based one (Mitsuba 3) that
training never sees, for the cross-domain benchmark. Above ``core``, below ``training`` and
``evaluation``. The renderers need the ``train`` extra (pybullet, mitsuba, trimesh).
"""
