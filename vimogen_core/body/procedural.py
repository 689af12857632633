"""The project's own SMPL-compatible body model, generated procedurally and written as an
SMPL-format `.npz` (the keys a real SMPL file has), so it loads through the same smplx code
path as user-supplied models.

The skeleton is `kinematics.rest_joints24()` (SMPL body frame: Y up, facing +Z, left = +X).
The mesh is one capsule per bone plus one for the head, each rigidly skinned to the bone's
parent joint. `J_regressor` averages the ring of vertices around each joint, so it reproduces
the rest joints exactly and girth changes leave the joints in place. Shape space:
beta0 scales the whole body (height, 5 % per unit), beta1 the girth (10 % per unit); the
remaining betas and all pose correctives are zero.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vimogen_core.body.model_files import content_hash, write_npz_atomic
from vimogen_core.motion.kinematics import rest_joints24
from vimogen_core.motion.skeleton import JOINT_NAMES, SMPL24_PARENTS
from vimogen_core.state import state_dir

GENERATOR_VERSION = 1
SMPL_NUM_VERTICES = 6890  # smplx picks extra keypoints at SMPL vertex ids up to 6787
NUM_BETAS = 10
HEIGHT_PER_BETA = 0.05
GIRTH_PER_BETA = 0.10
RING_SEGMENTS = 16
HEMISPHERE_RINGS = 9  # per capsule end, the equator included

_JOINT24_NAMES = JOINT_NAMES + ("left_hand", "right_hand")
# Capsule radius (m) of the bone that ends at the named joint; the left side stands for both.
_BONE_RADIUS = {
    "hip": 0.085, "spine1": 0.12, "spine2": 0.125, "spine3": 0.13, "knee": 0.07, "ankle": 0.05,
    "foot": 0.04, "neck": 0.06, "collar": 0.05, "head": 0.05, "shoulder": 0.055, "elbow": 0.045,
    "wrist": 0.037, "hand": 0.03,
}
_HEAD_RADIUS = 0.095
_HEAD_TOP = np.array([0.0, 0.11, 0.02])  # from the head joint to the top capsule centre


def _radius(joint_name: str) -> float:
    return _BONE_RADIUS[joint_name.removeprefix("left_").removeprefix("right_")]


def _capsule(start: np.ndarray, end: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (N, 3), faces (M, 3), axis points (N, 3) (closest point of the segment) and the
    indices of the two equator rings (2, RING_SEGMENTS) whose centroids are `start` and `end`."""
    axis = end - start
    length = np.linalg.norm(axis)
    along = axis / length
    helper = np.array([1.0, 0.0, 0.0]) if abs(along[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    side_a = np.cross(along, helper)
    side_a /= np.linalg.norm(side_a)
    side_b = np.cross(along, side_a)
    angles = 2 * np.pi * np.arange(RING_SEGMENTS) / RING_SEGMENTS
    around = np.cos(angles)[:, None] * side_a + np.sin(angles)[:, None] * side_b  # (S, 3)

    # Latitudes from the start pole (exclusive) to the end pole (exclusive), each hemisphere
    # ending on its equator, which sits exactly at `start` / `end`.
    lat = np.linspace(-np.pi / 2, 0.0, HEMISPHERE_RINGS + 1)[1:]  # (H,) ends at 0
    ring_centres = np.concatenate([start + np.sin(lat)[:, None] * radius * along,
                                   end - np.sin(lat[::-1])[:, None] * radius * along])  # (2H, 3)
    ring_radii = np.concatenate([np.cos(lat), np.cos(lat[::-1])]) * radius  # (2H,)
    rings = ring_centres[:, None, :] + ring_radii[:, None, None] * around[None]  # (2H, S, 3)
    poles = np.stack([start - radius * along, end + radius * along])
    vertices = np.concatenate([rings.reshape(-1, 3), poles])
    axis_points = np.concatenate([np.repeat(np.concatenate([np.repeat(start[None], HEMISPHERE_RINGS, 0),
                                                            np.repeat(end[None], HEMISPHERE_RINGS, 0)]),
                                            RING_SEGMENTS, axis=0), poles])

    n_rings = 2 * HEMISPHERE_RINGS
    ring_index = np.arange(n_rings * RING_SEGMENTS).reshape(n_rings, RING_SEGMENTS)
    nxt = np.roll(ring_index, -1, axis=1)
    quads_a, quads_b = ring_index[:-1], ring_index[1:]
    quads_an, quads_bn = nxt[:-1], nxt[1:]
    faces = np.concatenate([
        np.stack([quads_a, quads_b, quads_bn], -1).reshape(-1, 3),
        np.stack([quads_a, quads_bn, quads_an], -1).reshape(-1, 3),
        np.stack([np.full(RING_SEGMENTS, len(vertices) - 2), nxt[0], ring_index[0]], -1),
        np.stack([np.full(RING_SEGMENTS, len(vertices) - 1), ring_index[-1], nxt[-1]], -1),
    ])
    equators = np.stack([ring_index[HEMISPHERE_RINGS - 1], ring_index[HEMISPHERE_RINGS]])
    return vertices, faces, axis_points, equators


def build_procedural_smpl(rest_joints: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The SMPL-format arrays: v_template, f, J_regressor, J, kintree_table, weights,
    shapedirs, posedirs (what smplx reads from a real SMPL file)."""
    joints = rest_joints24() if rest_joints is None else np.asarray(rest_joints, dtype=np.float64)
    n_joints = len(joints)
    pieces_v, pieces_f, pieces_axis, skin_joint = [], [], [], []
    ring_for_joint: dict[int, np.ndarray] = {}
    offset = 0

    def add(start, end, radius, bone_joint):
        nonlocal offset
        vertices, faces, axis_points, equators = _capsule(start, end, radius)
        pieces_v.append(vertices)
        pieces_f.append(faces + offset)
        pieces_axis.append(axis_points)
        skin_joint.append(np.full(len(vertices), bone_joint))
        offset += len(vertices)
        return equators + offset - len(vertices)

    for child, parent in enumerate(SMPL24_PARENTS):
        if parent < 0:
            continue
        equators = add(joints[parent], joints[child], _radius(_JOINT24_NAMES[child]), parent)
        ring_for_joint[child] = equators[1]
        if parent == 0 and _JOINT24_NAMES[child] == "spine1":
            ring_for_joint[0] = equators[0]
    head = _JOINT24_NAMES.index("head")
    add(joints[head], joints[head] + _HEAD_TOP, _HEAD_RADIUS, head)

    v_template = np.concatenate(pieces_v)
    n_vertices = len(v_template)
    if n_vertices < SMPL_NUM_VERTICES:
        raise RuntimeError(f"procedural mesh has {n_vertices} vertices; smplx samples SMPL vertex ids up to 6889")
    regressor = np.zeros((n_joints, n_vertices))
    for joint, ring in ring_for_joint.items():
        regressor[joint, ring] = 1.0 / len(ring)
    weights = np.zeros((n_vertices, n_joints))
    weights[np.arange(n_vertices), np.concatenate(skin_joint)] = 1.0
    shapedirs = np.zeros((n_vertices, 3, NUM_BETAS))
    shapedirs[:, :, 0] = HEIGHT_PER_BETA * v_template
    shapedirs[:, :, 1] = GIRTH_PER_BETA * (v_template - np.concatenate(pieces_axis))
    kintree = np.array([[np.iinfo(np.uint32).max if p < 0 else p for p in SMPL24_PARENTS],
                        list(range(n_joints))], dtype=np.int64)
    return {
        "v_template": v_template,
        "f": np.concatenate(pieces_f).astype(np.uint32),
        "J_regressor": regressor,
        "J": joints.copy(),
        "kintree_table": kintree,
        "weights": weights,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((n_vertices, 3, 9 * (n_joints - 1)), dtype=np.float32),
    }


def procedural_model_path() -> Path:
    """The procedural SMPL `.npz`, generated on first use; its name carries the skeleton's hash,
    so a changed skeleton gets a fresh file."""
    joints = rest_joints24()
    key = content_hash({"rest_joints": joints, "version": np.array(GENERATOR_VERSION)})
    path = state_dir() / "body_models" / f"SMPL_PROCEDURAL_{key}.npz"
    if not path.is_file():
        write_npz_atomic(path, build_procedural_smpl(joints))
    return path
