"""Export motions as glTF 2.0 binary (`.glb`), the format Blender, game engines and three.js open.

Layout: node j is SMPL joint j (`skeleton.JOINT_NAMES`, children as in `skeleton.PARENTS`), its
rest translation the bone offset in the parent's frame and its rest rotation identity, so the rest
pose is the T-pose of the SMPL body frame (Y up, facing +Z) - which is glTF's own convention, so
body-frame offsets and local rotations carry over unchanged. Only the root changes: the project's
world is Z up, glTF's Y up, so the root's rotation and translation are turned by (x, y, z) ->
(x, z, -y) (the same turn as the BVH export; a canonical clip walks along -Z). One animation:
a rotation channel (unit quaternions, x y z w) per joint and a translation channel on the root,
one key per frame at `fps`, linear interpolation. A skin binds the 22 joints to the rest pose, so
importers build an armature; given a `body` builder it also skins a body mesh so viewers have
something to draw (the CLI passes `vimogen_core.body.procedural.build_procedural_smpl`, each capsule
rigidly on its bone; this module takes it as an argument because body models sit a layer above motion).
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from vimogen_core.files import atomic_write_bytes
from vimogen_core.motion.export import Z_UP_TO_Y_UP, estimate_offsets
from vimogen_core.motion.kinematics import forward_kinematics
from vimogen_core.motion.motion import Motion
from vimogen_core.motion.rotations import matrix_to_quat
from vimogen_core.motion.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS, rest_offsets24

# glTF enums (spec section 5): component types, buffer-view targets.
FLOAT, UNSIGNED_BYTE, UNSIGNED_INT = 5126, 5121, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
_TYPES = {1: "SCALAR", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
_GLB_MAGIC, _GLB_VERSION = 0x46546C67, 2  # "glTF"
_CHUNK_JSON, _CHUNK_BIN = 0x4E4F534A, 0x004E4942  # "JSON", "BIN\0"
BODY_COLOUR = [0.55, 0.62, 0.75, 1.0]
# (24, 3) rest joints (SMPL body frame) -> a body in SMPL file layout: v_template (V, 3), f (F, 3), weights (V, 24).
BodyBuilder = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class _Buffer:
    """One binary buffer; every array gets its own 4-byte-aligned buffer view and an accessor."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, component: int, target: int | None = None, bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        width = 1 if array.ndim == 1 else int(np.prod(array.shape[1:]))
        self.data.extend(b"\0" * (-len(self.data) % 4))
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.data.extend(array.tobytes())
        self.views.append(view)
        accessor = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(array.shape[0]),
                    "type": _TYPES[width]}
        if bounds:  # required on POSITION attributes and animation inputs
            flat = array.reshape(len(array), width)
            accessor["min"] = [float(v) for v in flat.min(0)]
            accessor["max"] = [float(v) for v in flat.max(0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _continuous(quats: np.ndarray) -> np.ndarray:
    """(T, J, 4) -> the same rotations with each key's sign chosen nearest the previous key, so
    linear interpolation between keys takes the short way round."""
    quats = quats.copy()
    for t in range(1, len(quats)):
        flip = (quats[t] * quats[t - 1]).sum(-1) < 0
        quats[t, flip] *= -1
    return quats


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (a capsule's surface is smooth; flat normals would facet it)."""
    face_normals = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    normals = np.zeros_like(vertices)
    for corner in range(3):
        np.add.at(normals, faces[:, corner], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _add_body(gltf: dict, buffer: _Buffer, rest_joints: np.ndarray, build_body: BodyBuilder) -> None:
    """The body `build_body` makes for these rest joints, in the rest pose, rigidly skinned: a mesh node using skin 0."""
    hands = rest_joints[[20, 21]] + rest_offsets24()[[22, 23]]  # the body model has 24 joints; hands on the wrists
    body = build_body(np.concatenate([rest_joints, hands]))
    vertices = body["v_template"].astype(np.float32)
    faces = body["f"].astype(np.uint32)
    bone = body["weights"].argmax(1)  # one joint per vertex (rigid skinning); hands are leaves, never a bone
    joints = np.zeros((len(vertices), 4), dtype=np.uint8)
    joints[:, 0] = bone
    weights = np.zeros((len(vertices), 4), dtype=np.float32)
    weights[:, 0] = 1.0
    attributes = {
        "POSITION": buffer.add(vertices, FLOAT, ARRAY_BUFFER, bounds=True),
        "NORMAL": buffer.add(_vertex_normals(vertices.astype(np.float64), faces).astype(np.float32), FLOAT, ARRAY_BUFFER),
        "JOINTS_0": buffer.add(joints, UNSIGNED_BYTE, ARRAY_BUFFER),
        "WEIGHTS_0": buffer.add(weights, FLOAT, ARRAY_BUFFER),
    }
    indices = buffer.add(faces.reshape(-1), UNSIGNED_INT, ELEMENT_ARRAY_BUFFER)
    gltf["materials"] = [{"name": "body", "pbrMetallicRoughness": {"baseColorFactor": BODY_COLOUR,
                                                                   "metallicFactor": 0.0, "roughnessFactor": 0.8}}]
    gltf["meshes"] = [{"name": "body", "primitives": [{"attributes": attributes, "indices": indices, "material": 0}]}]
    # A skinned mesh's own node transform is ignored (spec 3.7.3): it sits at the scene root.
    gltf["nodes"].append({"name": "body", "mesh": 0, "skin": 0})
    gltf["scenes"][0]["nodes"].append(len(gltf["nodes"]) - 1)


def glb_bytes(motion: Motion, body: BodyBuilder | None = None, name: str = "motion") -> bytes:
    """A Motion -> the bytes of a `.glb` (see the module docstring). Bone offsets: the motion's
    skeleton, or estimated from its joints and rotations when it has none (a motion decoded from
    features), as the BVH export does."""
    local = motion.local_rotmats.to(torch.float64)
    joints = motion.joints.to(torch.float64).numpy()
    offsets = motion.offsets if motion.offsets is not None else estimate_offsets(local, motion.joints.to(torch.float64))
    offsets = np.asarray(offsets, dtype=np.float64)
    rotations = local.numpy().copy()  # (T, 22, 3, 3)
    rotations[:, 0] = Z_UP_TO_Y_UP @ rotations[:, 0]
    quats_wxyz = matrix_to_quat(torch.from_numpy(rotations)).numpy()  # (T, 22, 4)
    quats = _continuous(quats_wxyz[..., [1, 2, 3, 0]]).astype(np.float32)  # glTF stores x y z w
    root_translation = (joints[:, 0] @ Z_UP_TO_Y_UP.T).astype(np.float32)  # (T, 3)
    times = (np.arange(motion.n_frames) / motion.fps).astype(np.float32)

    # Rest pose: identity rotations, pelvis at the origin; node translations are the bone offsets.
    bones = np.concatenate([np.zeros((1, 3)), offsets[1:]])  # (22, 3), the pelvis at the origin
    identity = torch.eye(3, dtype=torch.float64).expand(NUM_JOINTS, 3, 3)
    rest_joints = forward_kinematics(identity, torch.zeros(3, dtype=torch.float64), bones)[0].numpy()  # (22, 3)
    nodes = []
    for j in range(NUM_JOINTS):
        node = {"name": JOINT_NAMES[j], "translation": [0.0, 0.0, 0.0] if j == 0 else [float(v) for v in offsets[j]]}
        children = [c for c, p in enumerate(PARENTS) if p == j]
        if children:
            node["children"] = children
        nodes.append(node)

    buffer = _Buffer()
    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (NUM_JOINTS, 1, 1))
    inverse_bind[:, :3, 3] = -rest_joints
    # glTF matrices are column-major: the transpose's rows are the columns.
    ibm = buffer.add(inverse_bind.transpose(0, 2, 1).reshape(NUM_JOINTS, 16), FLOAT)
    time_accessor = buffer.add(times, FLOAT, bounds=True)
    samplers, channels = [], []
    for j in range(NUM_JOINTS):
        samplers.append({"input": time_accessor, "output": buffer.add(quats[:, j], FLOAT), "interpolation": "LINEAR"})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": j, "path": "rotation"}})
    samplers.append({"input": time_accessor, "output": buffer.add(root_translation, FLOAT, bounds=True),
                     "interpolation": "LINEAR"})
    channels.append({"sampler": len(samplers) - 1, "target": {"node": 0, "path": "translation"}})

    gltf = {
        "asset": {"version": "2.0", "generator": "vimogen"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": nodes,
        "skins": [{"name": "smpl22", "joints": list(range(NUM_JOINTS)), "skeleton": 0, "inverseBindMatrices": ibm}],
        "animations": [{"name": name, "samplers": samplers, "channels": channels}],
    }
    if body is not None:
        _add_body(gltf, buffer, rest_joints, body)
    buffer.data.extend(b"\0" * (-len(buffer.data) % 4))
    gltf.update(accessors=buffer.accessors, bufferViews=buffer.views, buffers=[{"byteLength": len(buffer.data)}])

    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # the JSON chunk is padded with spaces, the binary one with zeros
    total = 12 + 8 + len(text) + 8 + len(buffer.data)
    return b"".join([struct.pack("<III", _GLB_MAGIC, _GLB_VERSION, total),
                     struct.pack("<II", len(text), _CHUNK_JSON), text,
                     struct.pack("<II", len(buffer.data), _CHUNK_BIN), bytes(buffer.data)])


def save_glb(path: str | os.PathLike, motion: Motion, body: BodyBuilder | None = None) -> Path:
    """A Motion -> `.glb` at `path` (written atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, glb_bytes(motion, body=body, name=path.stem))
