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

"""A physically based renderer that training never sees: the cross-domain benchmark's images.

A network trained on one renderer's images can learn that renderer instead of the robot. To
measure how far it transfers, the benchmark draws its sequences with a pipeline unlike the
training one in every stage (docs/sim_to_real.md):

- **renderer**: Mitsuba 3 path tracing (CPU, ``scalar_rgb``) with a principled BSDF, global
  illumination and soft shadows, instead of TinyRenderer's rasterised Phong shading;
- **light**: an environment map made from a held-out photo plus one or two area lights;
- **materials**: the COLLADA meshes' own colours with roughness, specular and clearcoat drawn
  from ranges that the training renderer has no notion of;
- **surroundings**: a floor or table top textured with held-out textures, clutter on it,
  3D occluders, and a held-out photo as backdrop (never an image from the training folders);
- **sensor**: auto exposure, a filmic tone curve, a Bayer mosaic with demosaicing, Poisson
  shot noise and Pillow's JPEG, instead of the training set's gamma, Gaussian noise and OpenCV JPEG.

One ``PbrScene`` is one sequence: its lights, backdrop, floor and sensor stay fixed while the
arm and the camera move, as in a real recording. Geometry conventions are ``core``'s: pixel
centres at integers, optical frame x right, y down, z forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
import shutil
import tempfile

import cv2
import numpy as np
from PIL import Image
from robot_pose_estimator.core.robot_model import RobotModel
from robot_pose_estimator.rendering.backgrounds import PhotoPool
from robot_pose_estimator.rendering.meshes import resolve_package_uri

#: Optical frame (x right, y down, z forward) -> Mitsuba camera frame (x left, y up, z forward).
_MITSUBA_FROM_OPTICAL = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Mitsuba's pixel reconstruction filter. A box of one pixel keeps every sample inside the image
#: block that traced it; a wider one (Mitsuba's default Gaussian) spills samples into neighbouring
#: blocks, which the render threads add into the film in whatever order they finish: two renders
#: of the same bag differed in 5-33 % of their frames (0.2-0.7 % of the pixels, up to 38 levels).
#: Bags record it (make_bag.json ``pixel_filter``), so a suite never reuses a bag drawn otherwise.
PIXEL_FILTER = 'box'


@dataclass
class _Part:
    """One material's triangles of one link's visual, in the link frame."""

    link: str
    name: str
    vertices: np.ndarray    # (N, 3)
    normals: np.ndarray     # (N, 3)
    colour: np.ndarray      # (3,) linear RGB


def _srgb_to_linear(colour: np.ndarray) -> np.ndarray:
    return np.where(colour <= 0.04045, colour / 12.92, ((colour + 0.055) / 1.055) ** 2.4)


def load_visual_parts(urdf_path: Path) -> list[tuple[_Part, np.ndarray]]:
    """Every visual mesh of a URDF as (part, faces), split by material, in its link's frame."""
    import trimesh  # [train] extra
    import yourdfpy  # imports trimesh too

    urdf = yourdfpy.URDF.load(str(urdf_path), build_scene_graph=False, load_meshes=False,
                              build_collision_scene_graph=False, load_collision_meshes=False)
    parts = []
    for link_name, link in urdf.link_map.items():
        for v, visual in enumerate(link.visuals):
            if visual.geometry is None or visual.geometry.mesh is None:
                continue
            path = resolve_package_uri(visual.geometry.mesh.filename, urdf_path.parent)
            origin = np.asarray(visual.origin if visual.origin is not None else np.eye(4), dtype=float)
            scale = visual.geometry.mesh.scale
            scale = np.ones(3) if scale is None else np.broadcast_to(np.asarray(scale, dtype=float), 3)
            scene = trimesh.load(str(path), force='scene')
            for node in scene.graph.nodes_geometry:
                transform, geometry = scene.graph[node]
                mesh = scene.geometry[geometry].copy()
                mesh.apply_transform(origin @ np.diag([*scale, 1.0]) @ transform)
                colour = _mesh_colour(mesh)
                part = _Part(link_name, f'{link_name}_{v}_{len(parts)}', np.asarray(mesh.vertices, dtype=np.float64),
                             np.asarray(mesh.vertex_normals, dtype=np.float64), _srgb_to_linear(colour))
                parts.append((part, np.asarray(mesh.faces, dtype=np.uint32)))
    if not parts:
        raise ValueError(f'{urdf_path}: no visual meshes')
    return parts


def _mesh_colour(mesh) -> np.ndarray:
    """Return the sRGB colour in [0, 1] of a trimesh part (material base colour, else face colour, else grey)."""
    material = getattr(mesh.visual, 'material', None)
    for attribute in ('baseColorFactor', 'main_color', 'diffuse'):
        value = getattr(material, attribute, None) if material is not None else None
        if value is not None:
            value = np.asarray(value, dtype=float)[:3]
            return value / 255.0 if value.max() > 1.0 else value
    colours = getattr(mesh.visual, 'face_colors', None)
    if colours is not None and len(colours):
        return np.asarray(colours[0][:3], dtype=float) / 255.0
    return np.array([0.8, 0.8, 0.8])


class PbrScene:
    """A path-traced scene of one robot (Mitsuba 3, CPU): fixed surroundings, moving arm and camera.

    ``seed`` draws everything the sequence keeps: environment photo and its rotation and
    brightness, area lights, floor or table and its texture, 2-6 objects standing on it, the
    robot's material parameters, the backdrop photo, occluders (``occluders`` boxes near the line
    of sight to the arm) and the sensor (exposure, tone curve, noise, JPEG quality).
    """

    def __init__(self, urdf_path: str | Path, robot: RobotModel, width: int, height: int,
                 photos: PhotoPool, textures: PhotoPool, seed: int, spp: int = 32, occluders: int = 0):
        try:  # optional [train] dependency
            import mitsuba as mi
        except ImportError as error:
            raise ImportError("the cross-domain renderer needs Mitsuba 3: pip install '.[train]'") from error
        mi.set_variant('scalar_rgb')
        self._mi = mi
        self.width, self.height, self.spp = int(width), int(height), int(spp)
        self.rng = np.random.default_rng([seed, 31337])
        self.urdf_path = resolve_package_uri(str(urdf_path), Path.cwd())
        self.kinematics = RobotModel.from_urdf(self.urdf_path, robot.keypoint_specs, robot.joint_names)
        self._occluders = int(occluders)
        self._folder = Path(tempfile.mkdtemp(prefix='rpe_pbr_'))
        self.parts = load_visual_parts(self.urdf_path)
        self.backdrop = photos.sample(self.rng, self.height, self.width, scale_range=(0.4, 1.0), jitter=0.1)
        self.sensor = _SensorModel(self.rng)
        self.scene = mi.load_dict(self._scene_dict(photos, textures), optimize=False)  # keep parts apart: they move
        self.params = mi.traverse(self.scene)
        self._occluder_sizes = self.rng.uniform(0.05, 0.2, size=(self._occluders, 3))

    def _write_ply(self, name: str, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray) -> str:
        mesh = self._mi.Mesh(name, len(vertices), len(faces), has_vertex_normals=True)
        params = self._mi.traverse(mesh)
        params['vertex_positions'] = vertices.astype(np.float32).ravel()
        params['vertex_normals'] = normals.astype(np.float32).ravel()
        params['faces'] = faces.ravel()
        params.update()
        path = self._folder / f'{name}.ply'
        mesh.write_ply(str(path))
        return str(path)

    def _scene_dict(self, photos: PhotoPool, textures: PhotoPool) -> dict:
        mi, rng = self._mi, self.rng
        environment = photos.sample(rng, 256, 512, scale_range=(0.5, 1.0), jitter=0.15)
        scene: dict = {
            'type': 'scene',
            'integrator': {'type': 'path', 'max_depth': 3, 'hide_emitters': True},
            'sensor': {'type': 'perspective', 'fov_axis': 'x', 'fov': 60.0,
                       'film': {'type': 'hdrfilm', 'width': self.width, 'height': self.height,
                                'pixel_format': 'rgba', 'rfilter': {'type': PIXEL_FILTER}},
                       'sampler': {'type': 'independent', 'sample_count': self.spp}},
            'environment': {'type': 'envmap', 'bitmap': mi.Bitmap(_srgb_to_linear(environment).astype(np.float32)),
                            'scale': float(rng.uniform(0.4, 1.6)),
                            'to_world': mi.ScalarTransform4f().rotate([0, 0, 1], float(rng.uniform(0, 360)))
                            @ mi.ScalarTransform4f().rotate([1, 0, 0], 90.0)},
        }
        for i in range(int(rng.integers(1, 3))):
            azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(30), np.radians(80))
            distance = rng.uniform(1.5, 3.0)
            position = distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                            np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
            side = float(rng.uniform(0.3, 1.2))
            warmth = rng.uniform(-0.15, 0.15)
            scene[f'light_{i}'] = {
                'type': 'rectangle',
                'to_world': mi.ScalarTransform4f().look_at(origin=position.tolist(), target=[0, 0, 0.4], up=[0, 0, 1])
                @ mi.ScalarTransform4f().scale([side, side, 1.0]),
                'emitter': {'type': 'area', 'radiance': {'type': 'rgb', 'value': (
                    float(rng.uniform(2.0, 8.0)) * np.array([1 + warmth, 1.0, 1 - warmth]) / side**2).tolist()}}}
        floor_texture = textures.sample(rng, 512, 512, scale_range=(0.5, 1.0), jitter=0.1)
        table = rng.random() < 0.4
        half = (rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.7)) if table else (4.0, 4.0)
        tiles = rng.uniform(0.3, 1.0) if table else rng.uniform(3.0, 8.0)
        scene['floor'] = {
            'type': 'rectangle',
            'to_world': mi.ScalarTransform4f().translate([float(rng.uniform(-0.2, 0.2)), 0.0, -0.001])
            @ mi.ScalarTransform4f().rotate([0, 0, 1], float(rng.uniform(0, 360)))
            @ mi.ScalarTransform4f().scale([half[0], half[1], 1.0]),
            'bsdf': {'type': 'principled', 'roughness': float(rng.uniform(0.3, 0.9)),
                     'base_color': {'type': 'bitmap',
                                    'bitmap': mi.Bitmap(_srgb_to_linear(floor_texture).astype(np.float32)),
                                    'raw': True,
                                    'to_uv': mi.ScalarTransform4f().scale([tiles, tiles, 1.0])}}}
        for i in range(int(rng.integers(2, 7))):
            scene[f'clutter_{i}'] = self._clutter(rng, textures, on_table=table, half=half)
        roughness, specular, clearcoat = rng.uniform(0.2, 0.6), rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.5)
        tint = rng.uniform(0.93, 1.03, size=3)
        for part, faces in self.parts:
            colour = np.clip(part.colour * tint, 0.0, 1.0)
            scene[part.name] = {
                'type': 'ply', 'filename': self._write_ply(part.name, part.vertices, part.normals, faces),
                'bsdf': {'type': 'principled', 'base_color': {'type': 'rgb', 'value': colour.tolist()},
                         'roughness': float(roughness), 'specular': float(specular),
                         'clearcoat': float(clearcoat)}}
        for i in range(self._occluders):
            colour = _srgb_to_linear(rng.uniform(0.1, 0.9, 3))
            scene[f'occluder_{i}'] = {'type': 'cube', 'bsdf': {'type': 'principled', 'roughness': 0.5,
                                                               'base_color': {'type': 'rgb', 'value': colour.tolist()}}}
        return scene

    def _clutter(self, rng: np.random.Generator, textures: PhotoPool, on_table: bool,
                 half: tuple[float, float]) -> dict:
        """One box, sphere or cylinder standing on the floor 0.45-1.3 m from the base (on a table: on it)."""
        mi = self._mi
        kind = ('cube', 'sphere', 'cylinder')[int(rng.integers(3))]
        size = rng.uniform(0.03, 0.15, 3)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        distance = rng.uniform(0.3, max(0.35, min(half) - 0.05)) if on_table else rng.uniform(0.45, 1.3)
        height = size[2] if kind != 'sphere' else size[0]
        transform = mi.ScalarTransform4f().translate([distance * np.cos(angle), distance * np.sin(angle), 0.0])
        transform = transform @ mi.ScalarTransform4f().rotate([0, 0, 1], float(rng.uniform(0, 360)))
        if kind == 'cylinder':     # Mitsuba's cylinder runs from z = 0 to 1 with radius 1
            transform = transform @ mi.ScalarTransform4f().scale([size[0], size[0], 2.0 * size[2]])
        else:
            transform = transform @ mi.ScalarTransform4f().translate([0.0, 0.0, height]) \
                @ mi.ScalarTransform4f().scale(size.tolist() if kind == 'cube' else [size[0]] * 3)
        if rng.random() < 0.5:
            texture = textures.sample(rng, 128, 128, scale_range=(0.3, 1.0), jitter=0.2)
            colour = {'type': 'bitmap', 'bitmap': mi.Bitmap(_srgb_to_linear(texture).astype(np.float32)), 'raw': True}
        else:
            colour = {'type': 'rgb', 'value': _srgb_to_linear(rng.uniform(0.05, 0.95, 3)).tolist()}
        return {'type': kind, 'to_world': transform,
                'bsdf': {'type': 'principled', 'base_color': colour, 'roughness': float(rng.uniform(0.1, 0.9)),
                         'metallic': float(rng.choice([0.0, 0.0, 0.9]))}}

    def render(self, q: np.ndarray, T_camera_base: np.ndarray, K: np.ndarray) -> np.ndarray:
        """(height, width, 3) uint8 RGB of the robot at joint angles q seen by (K, T_camera_base)."""
        mi, params = self._mi, self.params
        K = np.asarray(K, dtype=float)
        if abs(K[0, 0] - K[1, 1]) > 1e-6 * K[0, 0] or abs(K[0, 1]) > 1e-9:
            raise ValueError('the path tracer draws square pixels without skew (fx == fy, K[0, 1] == 0)')
        frames = self.kinematics.link_transforms(q)
        for part, _ in self.parts:
            frame = frames[part.link]
            params[f'{part.name}.vertex_positions'] = (part.vertices @ frame[:3, :3].T + frame[:3, 3]).astype(
                np.float32).ravel()
            params[f'{part.name}.vertex_normals'] = (part.normals @ frame[:3, :3].T).astype(np.float32).ravel()
        camera_to_world = np.linalg.inv(np.asarray(T_camera_base, dtype=float)) @ _MITSUBA_FROM_OPTICAL
        params['sensor.to_world'] = mi.ScalarTransform4f(camera_to_world.tolist())
        params['sensor.x_fov'] = float(np.degrees(2.0 * np.arctan(0.5 * self.width / K[0, 0])))
        # Mitsuba's principal point sits at the film centre (pixel-centre coordinate (W - 1) / 2),
        # shifted by these fractions of the film size, counted positive left and up.
        params['sensor.principal_point_offset_x'] = float(((self.width - 1) / 2.0 - K[0, 2]) / self.width)
        params['sensor.principal_point_offset_y'] = float(((self.height - 1) / 2.0 - K[1, 2]) / self.height)
        self._place_occluders(T_camera_base, frames)
        params.update()
        image = np.asarray(mi.render(self.scene, spp=self.spp, seed=int(self.rng.integers(2**31))))
        alpha = np.clip(image[..., 3:4], 0.0, 1.0)
        # An edge-preserving filter removes most path-tracing noise, which no camera makes.
        rendered = cv2.bilateralFilter(np.ascontiguousarray(image[..., :3], dtype=np.float32), 5, 0.08, 2.0)
        linear = rendered + (1.0 - alpha) * _srgb_to_linear(self.backdrop)
        return self.sensor(linear, self.rng)

    def _place_occluders(self, T_camera_base: np.ndarray, frames: dict[str, np.ndarray]) -> None:
        """Put the occluders between the camera and random links, 30-70 % of the way to them."""
        if not self._occluders:
            return
        mi = self._mi
        camera = -T_camera_base[:3, :3].T @ T_camera_base[:3, 3]
        links = sorted(frames)
        rng = np.random.default_rng([self._occluders, len(links)])   # the same placement for a whole sequence
        for i in range(self._occluders):
            target = frames[links[int(rng.integers(len(links)))]][:3, 3]
            point = camera + rng.uniform(0.4, 0.75) * (target - camera)
            transform = mi.ScalarTransform4f().translate(point.tolist()) @ mi.ScalarTransform4f().scale(
                self._occluder_sizes[i].tolist())
            self.params[f'occluder_{i}.vertex_positions'] = _cube_vertices(transform)

    def close(self) -> None:
        """Drop the temporary PLY files."""
        shutil.rmtree(self._folder, ignore_errors=True)


def _cube_vertices(transform) -> np.ndarray:
    """Return the 24 vertices of Mitsuba's unit cube ([-1, 1]^3, 4 per face) under ``transform``, flattened."""
    corners = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                point = [0.0, 0.0, 0.0]
                point[axis] = sign
                point[(axis + 1) % 3], point[(axis + 2) % 3] = a, b
                corners.append(point)
    matrix = np.asarray(transform.matrix, dtype=float)
    points = np.asarray(corners) @ matrix[:3, :3].T + matrix[:3, 3]
    return points.astype(np.float32).ravel()


class _SensorModel:
    """A camera pipeline unlike the training one: auto exposure, filmic curve, Bayer, shot noise, Pillow JPEG."""

    def __init__(self, rng: np.random.Generator):
        self.exposure: float | None = None
        self.key = rng.uniform(0.16, 0.28)          # target mean linear intensity of auto exposure
        self.shoulder = rng.uniform(0.6, 1.2)
        self.photons = rng.uniform(300.0, 3000.0)   # photo-electrons at full scale: lower is noisier
        self.quality = int(rng.integers(70, 93))
        self.white = rng.uniform(0.92, 1.08, size=3)

    def __call__(self, linear: np.ndarray, rng: np.random.Generator) -> np.ndarray:

        if self.exposure is None:   # metered once on the first frame, then held, like a locked AE
            self.exposure = self.key / max(float(linear.mean()), 1e-4)
        exposed = np.clip(linear * self.exposure * self.white, 0.0, None)
        exposed = rng.poisson(exposed * self.photons) / self.photons
        toned = exposed * (1.0 + exposed / self.shoulder**2) / (1.0 + exposed)     # extended Reinhard
        encoded = np.where(toned <= 0.0031308, 12.92 * toned,
                           1.055 * np.power(np.clip(toned, 0, None), 1 / 2.4) - 0.055)
        rgb = np.clip(encoded * 255.0 + 0.5, 0, 255).astype(np.uint8)
        mosaic = np.zeros(rgb.shape[:2], dtype=np.uint8)          # RGGB
        mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
        mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
        mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
        mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
        demosaiced = cv2.cvtColor(mosaic, cv2.COLOR_BayerBG2RGB)
        buffer = BytesIO()
        Image.fromarray(demosaiced).save(buffer, format='JPEG', quality=self.quality, subsampling=2)
        return np.asarray(Image.open(buffer).convert('RGB'))
