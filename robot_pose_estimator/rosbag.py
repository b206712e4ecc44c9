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

"""Read and write rosbag2 bags (MCAP or sqlite3) with ``rosbags``: no ROS installation needed.

A bag for evaluation holds an image topic (``sensor_msgs/Image`` or ``CompressedImage``), its
``CameraInfo`` and, optionally, ground truth on ``/ground_truth/joint_states`` (JointState) and
``/ground_truth/tf`` (TFMessage with camera optical frame -> robot base). :class:`BagReader`
yields one :class:`BagFrame` per image, with the camera model and the ground truth matched to
the image by header stamp. :class:`BagWriter` writes such bags (``make-bag``, tests).
"""
from __future__ import annotations

import argparse
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np
from robot_pose_estimator.core.camera import CameraModel
from robot_pose_estimator.core.frames import StaticTransforms
from robot_pose_estimator.core.images import compressed_to_rgb, image_to_rgb, rgb_to_compressed_bytes, rgb_to_pixels
from robot_pose_estimator.core.messages import (  # noqa: F401 (stamp_to_ns and transform_to_matrix re-exported)
    camera_info_to_model, matrix_to_transform_fields, ns_to_stamp_fields, stamp_to_ns, transform_to_matrix
)
from robot_pose_estimator.core.transforms import invert_transform
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
JOINT_STATE = 'sensor_msgs/msg/JointState'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)

DEFAULT_IMAGE_TOPIC = '/camera/image_raw/compressed'
DEFAULT_CAMERA_INFO_TOPIC = '/camera/camera_info'
DEFAULT_GT_JOINT_STATES_TOPIC = '/ground_truth/joint_states'
DEFAULT_GT_TF_TOPIC = '/ground_truth/tf'
#: Where ``ros2 bag record`` puts a robot driver's own joint angles.
DEFAULT_MEASURED_JOINTS_TOPIC = '/joint_states'
STATIC_TF_TOPIC = '/tf_static'
DEFAULT_CAMERA_FRAME = 'camera_color_optical_frame'


class BagError(ValueError):
    """A bag that lacks what evaluation needs; the message names the topic or field."""


# --- time ---------------------------------------------------------------------------------------

def ns_to_time(ns: int) -> Any:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    sec, nanosec = ns_to_stamp_fields(ns)
    return TYPESTORE.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str) -> Any:
    return TYPESTORE.types['std_msgs/msg/Header'](stamp=ns_to_time(stamp_ns), frame_id=frame_id)


# --- message <-> numpy --------------------------------------------------------------------------

def rgb_to_compressed(rgb: np.ndarray, stamp_ns: int, frame_id: str, quality: int = 90) -> Any:
    """RGB uint8 -> sensor_msgs/CompressedImage (JPEG)."""
    data = np.frombuffer(rgb_to_compressed_bytes(rgb, 'jpeg', quality), dtype=np.uint8)
    return TYPESTORE.types[COMPRESSED_IMAGE](header=header(stamp_ns, frame_id), format='jpeg', data=data)


def rgb_to_image(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = 'rgb8') -> Any:
    """RGB uint8 -> sensor_msgs/Image in any encoding ``core.images`` writes."""
    pixels = rgb_to_pixels(rgb, encoding)
    return TYPESTORE.types[IMAGE](header=header(stamp_ns, frame_id), height=pixels.height, width=pixels.width,
                                  encoding=pixels.encoding, is_bigendian=0, step=pixels.step,
                                  data=np.frombuffer(pixels.data, dtype=np.uint8))


def camera_info_msg(camera: CameraModel, stamp_ns: int, frame_id: str) -> Any:
    """Convert a CameraModel to sensor_msgs/CameraInfo with R = I and P = [K | 0]."""
    types = TYPESTORE.types
    P = np.zeros((3, 4))
    P[:, :3] = camera.K
    return types[CAMERA_INFO](
        header=header(stamp_ns, frame_id), height=camera.height, width=camera.width,
        distortion_model=camera.distortion_model, d=np.asarray(camera.D, dtype=np.float64),
        k=camera.K.ravel().copy(), r=np.eye(3).ravel(), p=P.ravel(), binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False))


def joint_state_msg(names: Sequence[str], positions: np.ndarray, stamp_ns: int) -> Any:
    return TYPESTORE.types[JOINT_STATE](
        header=header(stamp_ns, ''), name=list(names),
        position=np.asarray(positions, dtype=np.float64), velocity=np.zeros(0), effort=np.zeros(0))


def tf_msg(T_parent_child: np.ndarray, parent: str, child: str, stamp_ns: int) -> Any:
    """Build a TFMessage with one transform parent -> child (T maps child points into parent)."""
    types = TYPESTORE.types
    (x, y, z), (qx, qy, qz, qw) = matrix_to_transform_fields(T_parent_child)
    transform = types['geometry_msgs/msg/TransformStamped'](
        header=header(stamp_ns, parent), child_frame_id=child,
        transform=types['geometry_msgs/msg/Transform'](
            translation=types['geometry_msgs/msg/Vector3'](x=x, y=y, z=z),
            rotation=types['geometry_msgs/msg/Quaternion'](x=qx, y=qy, z=qz, w=qw)))
    return types[TF_MESSAGE](transforms=[transform])


# --- writing ------------------------------------------------------------------------------------

class BagWriter:
    """Write messages (rosbags objects of the Jazzy typestore) to a new bag directory.

    Connections are created on first use of a topic. Storage is MCAP unless ``storage='sqlite3'``.
    """

    def __init__(self, path: str | Path, storage: str = 'mcap') -> None:
        plugins = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f'storage must be one of {sorted(plugins)}, got {storage!r}')
        self.path = Path(path)
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._writer.close()

    def write(self, topic: str, message: Any, timestamp_ns: int) -> None:
        """Serialise and write ``message`` with the bag (receive) time ``timestamp_ns``."""
        msgtype = message.__msgtype__
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise BagError(f'topic {topic} has type {connection.msgtype}, cannot write {msgtype}')
        self._writer.write(connection, int(timestamp_ns), TYPESTORE.serialize_cdr(message, msgtype))


# --- reading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BagTopics:
    """Topic names; ``None`` for image and camera_info means: the bag's only topic of that type."""

    image: str | None = None
    camera_info: str | None = None
    joint_states: str = DEFAULT_GT_JOINT_STATES_TOPIC
    tf: str = DEFAULT_GT_TF_TOPIC
    #: The robot's measured joint angles (its driver's joint_states), used per ``joint_source``;
    #: None: DEFAULT_MEASURED_JOINTS_TOPIC when the bag has it, else none.
    measured_joints: str | None = None
    #: The ground-truth topics were named by the user: a bag without them is an error, not a bag
    #: without ground truth (a mistyped name must not read as "no ground truth").
    require_ground_truth: bool = False


DEFAULT_TOPICS = BagTopics()


class StampedGroundTruth:
    """``stamp`` and ``has_ground_truth`` for frame records with ``stamp_ns`` and the two ``*_gt`` fields."""

    stamp_ns: int
    joint_positions_gt: np.ndarray | None
    T_camera_base_gt: np.ndarray | None

    @property
    def stamp(self) -> float:
        return self.stamp_ns * 1e-9

    @property
    def has_ground_truth(self) -> bool:
        return self.joint_positions_gt is not None and self.T_camera_base_gt is not None


@dataclass
class BagFrame(StampedGroundTruth):
    """One image of a bag with what belongs to it. Ground truth is None when the bag has none."""

    index: int
    stamp_ns: int                       # the image's header stamp
    log_time_ns: int                    # when the bag recorded it (drives playback rate)
    frame_id: str
    image: np.ndarray                   # RGB uint8 (H, W, 3)
    camera: CameraModel
    joint_positions_gt: np.ndarray | None = None   # (J,) in the reader's joint order
    T_camera_base_gt: np.ndarray | None = None     # (4, 4)


class JointSample(NamedTuple):
    """One sensor_msgs/JointState: header stamp (s), joint names, positions (rad)."""

    stamp: float
    names: list[str]
    positions: np.ndarray


class _StampIndex:
    """Messages sorted by header stamp, looked up by the nearest stamp within a tolerance."""

    def __init__(self, stamps_ns: list[int], items: list[Any]) -> None:
        order = np.argsort(np.asarray(stamps_ns, dtype=np.int64), kind='stable')
        self.stamps = np.asarray(stamps_ns, dtype=np.int64)[order]
        self.items = [items[i] for i in order]

    def __len__(self) -> int:
        return len(self.items)

    def nearest(self, stamp_ns: int, tolerance_ns: int | None) -> Any | None:
        if not self.items:
            return None
        i = int(np.searchsorted(self.stamps, stamp_ns))
        candidates = [j for j in (i - 1, i) if 0 <= j < len(self.items)]
        best = min(candidates, key=lambda j: abs(int(self.stamps[j]) - stamp_ns))
        if tolerance_ns is not None and abs(int(self.stamps[best]) - stamp_ns) > tolerance_ns:
            return None
        return self.items[best]


class BagReader:
    """Frames of a rosbag2 (a bag directory, or a single .mcap / .db3 file) for evaluation.

    ``base_frame`` is the robot's root link (the TF child); ``joint_names`` orders the ground-truth
    joint positions. Ground truth is matched to an image by header stamp within
    ``stamp_tolerance_s``; CameraInfo by the nearest stamp (calibrations rarely change).
    ``rectified`` images (image_rect) are described by CameraInfo P, as the node reads them.
    """

    def __init__(self, path: str | Path, topics: BagTopics = DEFAULT_TOPICS, base_frame: str | None = None,
                 joint_names: Sequence[str] | None = None, stamp_tolerance_s: float = 1e-3,
                 rectified: bool = False) -> None:
        self.path = Path(path)
        self.rectified = rectified
        self.topics = topics
        self.base_frame = base_frame
        self.joint_names = list(joint_names) if joint_names is not None else None
        self.tolerance_ns = int(round(stamp_tolerance_s * 1e9))
        self._reader = Reader(self.path)
        self._reader.open()
        try:
            types = {c.topic: c.msgtype for c in self._reader.connections}
            self.image_topic = self._pick_topic(types, topics.image, IMAGE_TYPES, 'image')
            self.camera_info_topic = self._pick_topic(types, topics.camera_info, (CAMERA_INFO,), 'camera_info')
            self.image_type = types[self.image_topic]
            self.ground_truth_topics_present = (types.get(topics.joint_states) == JOINT_STATE
                                                and types.get(topics.tf) == TF_MESSAGE)
            if topics.require_ground_truth and not self.ground_truth_topics_present:
                self._pick_topic(types, topics.joint_states, (JOINT_STATE,), 'ground-truth joint_states')
                self._pick_topic(types, topics.tf, (TF_MESSAGE,), 'ground-truth TF')
            self._load_small_topics()
        except Exception:
            self._reader.close()
            raise

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def __len__(self) -> int:
        return sum(c.msgcount for c in self._reader.connections if c.topic == self.image_topic)

    @property
    def has_ground_truth(self) -> bool:
        return len(self._joint_states) > 0 and len(self._transforms) > 0

    @property
    def duration_s(self) -> float:
        return self._reader.duration * 1e-9

    @staticmethod
    def _pick_topic(types: dict[str, str], wanted: str | None, msgtypes: tuple[str, ...], what: str) -> str:
        if wanted is not None:
            if wanted not in types:
                raise BagError(f'{what} topic {wanted!r} is not in the bag; it has: {sorted(types)}')
            if types[wanted] not in msgtypes:
                raise BagError(f'{what} topic {wanted!r} has type {types[wanted]}, expected {" or ".join(msgtypes)}')
            return wanted
        found = sorted(t for t, m in types.items() if m in msgtypes)
        if len(found) != 1:
            raise BagError(f'cannot choose the {what} topic: the bag has {found or "none"} of type '
                           f'{" or ".join(msgtypes)}; name one explicitly')
        return found[0]

    def _messages(self, connections: Sequence[Any]) -> Iterator[tuple[Any, int, bytes]]:
        """Read the messages of ``connections``; none for none (rosbags reads every topic given an empty list)."""
        return self._reader.messages(connections=connections) if connections else iter(())

    def _load_small_topics(self) -> None:
        """Read camera infos and ground truth into stamp indexes (one pass; images stay on disk)."""
        wanted = {self.camera_info_topic}
        if self.ground_truth_topics_present:
            wanted |= {self.topics.joint_states, self.topics.tf}
        connections = [c for c in self._reader.connections if c.topic in wanted]
        infos: tuple[list[int], list[Any]] = ([], [])
        joints: tuple[list[int], list[Any]] = ([], [])
        transforms: tuple[list[int], list[Any]] = ([], [])
        for connection, _, raw in self._messages(connections):
            msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
            if connection.topic == self.camera_info_topic:
                infos[0].append(stamp_to_ns(msg.header.stamp))
                infos[1].append(msg)
            elif connection.topic == self.topics.joint_states:
                joints[0].append(stamp_to_ns(msg.header.stamp))
                joints[1].append(msg)
            else:
                for transform in msg.transforms:
                    transforms[0].append(stamp_to_ns(transform.header.stamp))
                    transforms[1].append(transform)
        if not infos[0]:
            raise BagError(f'no CameraInfo messages on {self.camera_info_topic}')
        self._camera_infos = _StampIndex(*infos)
        self._joint_states = _StampIndex(*joints)
        self._transforms = _StampIndex(*transforms)
        self._camera_cache: dict[int, CameraModel] = {}

    def camera_at(self, stamp_ns: int) -> CameraModel:
        """Return the camera model of the CameraInfo nearest in stamp."""
        msg = self._camera_infos.nearest(stamp_ns, None)
        key = id(msg)
        if key not in self._camera_cache:
            self._camera_cache[key] = camera_info_to_model(msg, rectified=self.rectified)
        return self._camera_cache[key]

    def joint_positions_at(self, stamp_ns: int) -> np.ndarray | None:
        """Ground-truth joint positions at a stamp, in ``joint_names`` order; None when not recorded."""
        msg = self._joint_states.nearest(stamp_ns, self.tolerance_ns)
        if msg is None:
            return None
        names = list(msg.name)
        positions = np.asarray(msg.position, dtype=np.float64)
        if self.joint_names is None:
            return positions
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            raise BagError(f'{self.topics.joint_states} lacks joints {missing}; it has {names}')
        return positions[[names.index(n) for n in self.joint_names]]

    def transform_at(self, stamp_ns: int, camera_frame: str) -> np.ndarray | None:
        """Ground-truth T_camera_base at a stamp; a base -> camera transform is inverted."""
        stamps = self._transforms.stamps
        lo = np.searchsorted(stamps, stamp_ns - self.tolerance_ns, side='left')
        hi = np.searchsorted(stamps, stamp_ns + self.tolerance_ns, side='right')
        candidates = sorted(range(lo, hi), key=lambda j: abs(int(stamps[j]) - stamp_ns))
        for j in candidates:
            transform = self._transforms.items[j]
            parent, child = transform.header.frame_id.lstrip('/'), transform.child_frame_id.lstrip('/')
            if self._is_base(child) and (not camera_frame or parent == camera_frame):
                return transform_to_matrix(transform.transform)
            if self._is_base(parent) and (not camera_frame or child == camera_frame):
                return invert_transform(transform_to_matrix(transform.transform))
        return None

    def _is_base(self, frame: str) -> bool:
        return frame == self.base_frame if self.base_frame else True

    def frames(self, indices: Collection[int] | None = None) -> Iterator[BagFrame]:
        """Decode the images one by one, in recorded order, with camera and ground truth.

        ``indices`` (positions in the image topic) limits decoding to those frames.
        """
        connections = [c for c in self._reader.connections if c.topic == self.image_topic]
        decode = compressed_to_rgb if self.image_type == COMPRESSED_IMAGE else image_to_rgb
        wanted = None if indices is None else set(indices)
        for index, (connection, log_time, raw) in enumerate(self._messages(connections)):
            if wanted is not None and index not in wanted:
                continue
            msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
            stamp_ns = stamp_to_ns(msg.header.stamp)
            frame_id = msg.header.frame_id.lstrip('/')
            frame = BagFrame(index=index, stamp_ns=stamp_ns, log_time_ns=int(log_time), frame_id=frame_id,
                             image=decode(msg), camera=self.camera_at(stamp_ns))
            if self.has_ground_truth:
                frame.joint_positions_gt = self.joint_positions_at(stamp_ns)
                frame.T_camera_base_gt = self.transform_at(stamp_ns, frame_id)
            yield frame

    @property
    def measured_joints_topic(self) -> str | None:
        """Return the topic of the robot's measured joint angles this bag offers (``BagTopics.measured_joints``)."""
        types = {c.topic: c.msgtype for c in self._reader.connections}
        wanted = self.topics.measured_joints
        if wanted is None:
            return DEFAULT_MEASURED_JOINTS_TOPIC if types.get(DEFAULT_MEASURED_JOINTS_TOPIC) == JOINT_STATE else None
        if wanted not in types:
            raise BagError(f'measured joints topic {wanted!r} is not in the bag; it has: {sorted(types)}')
        if types[wanted] != JOINT_STATE:
            raise BagError(f'measured joints topic {wanted!r} has type {types[wanted]}, expected {JOINT_STATE}')
        return wanted

    def measured_joint_states(self) -> list[JointSample]:
        """Every message on ``measured_joints_topic`` as (stamp s, names, positions), by stamp; [] without one."""
        topic = self.measured_joints_topic
        if topic is None:
            return []
        connections = [c for c in self._reader.connections if c.topic == topic]
        samples = []
        for connection, _, raw in self._messages(connections):
            msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
            samples.append(JointSample(stamp_to_ns(msg.header.stamp) * 1e-9, list(msg.name),
                                       np.asarray(msg.position, dtype=np.float64)))
        return sorted(samples, key=lambda sample: sample.stamp)

    def static_transforms(self) -> StaticTransforms:
        """Return the bag's /tf_static (a camera driver's frames, a robot description's fixed joints), composable."""
        tree = StaticTransforms()
        connections = [c for c in self._reader.connections if c.topic == STATIC_TF_TOPIC and c.msgtype == TF_MESSAGE]
        for connection, _, raw in self._messages(connections):
            for transform in TYPESTORE.deserialize_cdr(raw, connection.msgtype).transforms:
                tree.add(transform.header.frame_id, transform.child_frame_id, transform_to_matrix(transform.transform))
        return tree

    def serialized_messages(self, topics: Sequence[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, log time ns, CDR bytes) for the given topics, in recorded order.

        The bytes are what ROS itself publishes, so ``play`` can hand them to rclpy unchanged.
        """
        connections = [c for c in self._reader.connections if c.topic in set(topics)]
        for connection, log_time, raw in self._messages(connections):
            yield connection.topic, connection.msgtype, int(log_time), bytes(raw)


# --- command line -----------------------------------------------------------------------------

def add_topic_arguments(parser: argparse.ArgumentParser, ground_truth: bool = True) -> None:
    """Topic overrides shared by evaluate, calibrate, play and demo; ``ground_truth``: also the scoring topics."""
    parser.add_argument('--image-topic', default=None,
                        help='image topic (Image or CompressedImage); default: the only one in the bag')
    parser.add_argument('--camera-info-topic', default=None,
                        help='CameraInfo topic; default: the only one in the bag')
    parser.add_argument('--measured-joints-topic', default=None,
                        help="the robot's own joint angles (JointState), used as the config's joint_source says; "
                             f'default: {DEFAULT_MEASURED_JOINTS_TOPIC} when the bag has it')
    if ground_truth:
        parser.add_argument('--gt-joint-states-topic', default=None,
                            help='ground-truth JointState topic to score against (default: '
                                 f'{DEFAULT_GT_JOINT_STATES_TOPIC} when the bag has it; a named one must be there)')
        parser.add_argument('--gt-tf-topic', default=None,
                            help='ground-truth TFMessage topic, camera optical frame -> robot base (default: '
                                 f'{DEFAULT_GT_TF_TOPIC} when the bag has it; a named one must be there)')


def topics_from_args(args: argparse.Namespace) -> BagTopics:
    """Return the ``BagTopics`` that ``add_topic_arguments``' options name."""
    joint_states, tf = getattr(args, 'gt_joint_states_topic', None), getattr(args, 'gt_tf_topic', None)
    return BagTopics(image=args.image_topic, camera_info=args.camera_info_topic,
                     joint_states=joint_states or DEFAULT_GT_JOINT_STATES_TOPIC, tf=tf or DEFAULT_GT_TF_TOPIC,
                     measured_joints=args.measured_joints_topic,
                     require_ground_truth=joint_states is not None or tf is not None)
