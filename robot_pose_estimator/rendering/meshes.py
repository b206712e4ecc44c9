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

"""A robot's detailed visual meshes, made loadable by the renderers.

Robot vendors publish URDFs whose visual meshes are COLLADA (``.dae``) files with several
materials each (the Panda's white shells and dark joint rings), referenced as
``package://<package>/...``. pybullet resolves neither the package URIs nor, in TinyRenderer,
the per-material colours: it draws every ``.dae`` white. ``visual_urdf`` therefore writes a copy
of the URDF whose meshes are absolute paths, with every ``.dae`` converted once to an OBJ whose
material colours are baked into a small palette texture (TinyRenderer draws textures). The
copies live in a cache folder keyed by the content of the sources, so they are made once.

``resolve_package_uri`` looks for ``share/<package>`` under the ROS prefixes (AMENT_PREFIX_PATH,
CMAKE_PREFIX_PATH, ROS_PACKAGE_PATH) and under Python's ``cmeel.prefix``, where the PyPI package
``example-robot-data`` installs Franka's Panda description.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
import sys
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np

PACKAGE_SCHEME = 'package://'
_PALETTE_CELL = 4   # pixels per palette colour: TinyRenderer samples the cell centre, never a neighbour


def _package_roots() -> list[Path]:
    """Folders that may hold ``<package>`` (ROS share folders and Python's cmeel prefix)."""
    roots: list[Path] = []
    for variable in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH'):
        roots += [Path(p) / 'share' for p in os.environ.get(variable, '').split(os.pathsep) if p]
    roots += [Path(p) for p in os.environ.get('ROS_PACKAGE_PATH', '').split(os.pathsep) if p]
    roots += [Path(p) / 'cmeel.prefix' / 'share' for p in sys.path if p]
    return roots


def resolve_package_uri(uri: str, base: Path) -> Path:
    """Absolute path of a URDF mesh reference: ``package://pkg/rest``, ``file://``, or relative to ``base``."""
    if uri.startswith(PACKAGE_SCHEME):
        package, _, rest = uri[len(PACKAGE_SCHEME):].partition('/')
        for root in _package_roots():
            candidate = root / package / rest
            if candidate.is_file():
                return candidate.resolve()
        raise FileNotFoundError(f'{uri}: package {package!r} not found under AMENT_PREFIX_PATH, ROS_PACKAGE_PATH '
                                f'or a Python cmeel prefix (for the Panda: pip install example-robot-data)')
    path = Path(uri[len('file://'):] if uri.startswith('file://') else uri)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise FileNotFoundError(f'mesh not found: {uri} (looked at {path})')
    return path.resolve()


def cache_directory() -> Path:
    """Where converted meshes and URDF copies go (``$XDG_CACHE_HOME/robot_pose_estimator/meshes``)."""
    root = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
    return root / 'robot_pose_estimator' / 'meshes'


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:16]


def dae_to_textured_obj(source: Path, cache: Path) -> Path:
    """Convert a COLLADA mesh to OBJ + MTL + palette PNG in ``cache`` (once) and return the OBJ path.

    Every part keeps its material's base colour: its vertices' texture coordinates point at that
    colour's cell of the palette. Scene-graph transforms are applied, as COLLADA viewers do.
    """
    import trimesh  # [train] extra: only the renderers convert meshes

    target = cache / _digest(source.read_bytes()) / (source.stem + '.obj')
    if target.is_file():
        return target
    scene = trimesh.load(str(source), force='scene')
    colours: list[tuple[int, int, int]] = []
    vertices, uvs, faces = [], [], []
    offset = 0
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        mesh = scene.geometry[name]
        colour = tuple(int(c) for c in _base_colour(mesh)[:3])
        if colour not in colours:
            colours.append(colour)
        points = trimesh.transform_points(np.asarray(mesh.vertices, dtype=float), transform)
        vertices.append(points)
        uvs.append(np.full((len(points), 1), colours.index(colour), dtype=int))
        faces.append(np.asarray(mesh.faces, dtype=int) + offset)
        offset += len(points)
    if not vertices:
        raise ValueError(f'{source}: no geometry')
    cells = len(colours)
    palette = np.repeat(np.repeat(np.array(colours, dtype=np.uint8)[None], _PALETTE_CELL, 0), _PALETTE_CELL, 1)
    index = np.concatenate(uvs)[:, 0]
    uv = np.stack([(index + 0.5) / cells, np.full(len(index), 0.5)], axis=1)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = source.stem
    cv2.imwrite(str(target.with_name(stem + '_palette.png')), cv2.cvtColor(palette, cv2.COLOR_RGB2BGR))
    target.with_name(stem + '.mtl').write_text(
        f'newmtl {stem}\nKa 1 1 1\nKd 1 1 1\nKs 0.1 0.1 0.1\nNs 20\nillum 2\nmap_Kd {stem}_palette.png\n')
    points, triangles = np.concatenate(vertices), np.concatenate(faces) + 1
    lines = [f'mtllib {stem}.mtl', f'o {stem}', f'usemtl {stem}']
    lines += [f'v {x:.6f} {y:.6f} {z:.6f}' for x, y, z in points]
    lines += [f'vt {u:.6f} {v:.6f}' for u, v in uv]
    lines += [f'f {a}/{a} {b}/{b} {c}/{c}' for a, b, c in triangles]
    temporary = target.with_suffix('.partial')
    temporary.write_text('\n'.join(lines) + '\n')
    temporary.replace(target)
    return target


def _base_colour(mesh) -> np.ndarray:
    """RGBA uint8 base colour of a trimesh part: its PBR base colour, diffuse colour, or first face colour."""
    visual = mesh.visual
    material = getattr(visual, 'material', None)
    for attribute in ('baseColorFactor', 'main_color', 'diffuse'):
        value = getattr(material, attribute, None) if material is not None else None
        if value is not None:
            value = np.asarray(value, dtype=float)
            return np.clip(value * 255.0 if value.max() <= 1.0 else value, 0, 255).astype(np.uint8)
    colours = getattr(visual, 'face_colors', None)
    return np.asarray(colours[0] if colours is not None and len(colours) else (200, 200, 200, 255), dtype=np.uint8)


def visual_urdf(urdf_path: str | Path, cache: Path | None = None) -> Path:
    """``urdf_path`` itself when pybullet can draw it as it is, else a converted copy in the cache.

    The copy has absolute mesh paths and textured OBJs instead of ``.dae`` files; its kinematics
    are the original's, untouched.
    """
    urdf_path = Path(urdf_path).resolve()
    tree = ElementTree.parse(urdf_path)
    meshes = list(tree.getroot().iter('mesh'))
    if not any(m.get('filename', '').startswith(PACKAGE_SCHEME) or m.get('filename', '').lower().endswith('.dae')
               for m in meshes):
        return urdf_path
    cache = cache or cache_directory()
    for mesh in meshes:
        path = resolve_package_uri(mesh.get('filename', ''), urdf_path.parent)
        if path.suffix.lower() == '.dae':
            path = dae_to_textured_obj(path, cache)
        mesh.set('filename', str(path))
    text = ElementTree.tostring(tree.getroot(), encoding='unicode')
    target = cache / (urdf_path.stem + '_' + _digest(text.encode()) + '.urdf')
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix('.partial')
        temporary.write_text(text)
        temporary.replace(target)
    return target
