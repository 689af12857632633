"""MBench Body_Penetration on a skinned body mesh.

`BodyMesh`: a skinned mesh (SMPL-format arrays: v_template, f, weights, J; the project's procedural
capsule body by default, a real SMPL file when the user has one; shape and pose correctives are not
applied). `body_penetration` = percentage of its triangles that intersect another triangle, per
frame, averaged. Triangles of body parts whose driving joints are within two steps in the kinematic
tree (same part, parent/child, siblings, grandparent) are never tested against each other: those
parts overlap by construction at every joint.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion.kinematics import forward_kinematics
from vimogen_core.motion.skeleton import NUM_JOINTS, SMPL24_PARENTS


def _segment_hits_triangle(p, q, v0, v1, v2, eps: float = 1e-12) -> np.ndarray:
    """Moller-Trumbore, vectorised: does segment p->q (N, 3) cross triangle (v0, v1, v2) (N, 3)?"""
    direction = q - p
    e1, e2 = v1 - v0, v2 - v0
    h = np.cross(direction, e2)
    a = np.sum(e1 * h, axis=-1)
    ok = np.abs(a) > eps
    f = np.where(ok, 1.0 / np.where(ok, a, 1.0), 0.0)
    s = p - v0
    u = f * np.sum(s * h, axis=-1)
    qv = np.cross(s, e1)
    v = f * np.sum(direction * qv, axis=-1)
    t = f * np.sum(e2 * qv, axis=-1)
    return ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t >= 0) & (t <= 1)


def triangles_intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a, b (N, 3, 3) triangles -> (N,) bool: does an edge of one cross the other?"""
    hit = np.zeros(len(a), dtype=bool)
    for first, second in ((a, b), (b, a)):
        for i, k in ((0, 1), (1, 2), (2, 0)):
            hit |= _segment_hits_triangle(first[:, i], first[:, k], second[:, 0], second[:, 1], second[:, 2])
    return hit


def _tree_distance(parents: Sequence[int]) -> np.ndarray:
    n = len(parents)
    adjacency = np.full((n, n), np.inf)
    np.fill_diagonal(adjacency, 0)
    for child, parent in enumerate(parents):
        if parent >= 0:
            adjacency[child, parent] = adjacency[parent, child] = 1
    for k in range(n):  # Floyd-Warshall on a 24-node tree
        adjacency = np.minimum(adjacency, adjacency[:, k : k + 1] + adjacency[k : k + 1, :])
    return adjacency


@dataclass
class BodyMesh:
    name: str
    v_template: np.ndarray  # (V, 3) rest vertices, SMPL body frame
    faces: np.ndarray  # (F, 3)
    weights: np.ndarray  # (V, J) skinning weights, J = 24
    rest_joints: np.ndarray  # (J, 3)
    min_tree_distance: int = 3  # parts closer than this in the tree are not tested

    def __post_init__(self):
        self.vertex_part = np.argmax(self.weights, axis=1)  # (V,)
        # A face belongs to the part most of its vertices follow (ties: the first vertex's).
        parts = self.vertex_part[self.faces]  # (F, 3)
        majority = np.where(parts[:, 1] == parts[:, 2], parts[:, 1], parts[:, 0])
        self.face_part = majority
        n_parts = self.weights.shape[1]
        self.part_faces = [np.flatnonzero(self.face_part == p) for p in range(n_parts)]
        self.part_vertices = [np.flatnonzero(self.vertex_part == p) for p in range(n_parts)]
        distance = _tree_distance(SMPL24_PARENTS[:n_parts])
        populated = np.array([len(f) > 0 for f in self.part_faces])
        self.tested_pairs = [(a, b) for a in range(n_parts) for b in range(a + 1, n_parts)
                             if populated[a] and populated[b] and distance[a, b] >= self.min_tree_distance]
        self._pairs = np.array(self.tested_pairs, dtype=np.int64).reshape(-1, 2)
        self._vertex_order = np.argsort(self.vertex_part, kind="stable")
        counts = np.bincount(self.vertex_part, minlength=n_parts)
        self._populated_parts = np.flatnonzero(counts > 0)
        self._part_starts = np.concatenate([[0], np.cumsum(counts)])[self._populated_parts]

    @classmethod
    def from_file(cls, path: str | os.PathLike, name: str | None = None) -> BodyMesh:
        from vimogen_core.body.model_files import load_model_arrays

        arrays = load_model_arrays(path)
        try:
            v_template, faces, weights = arrays["v_template"], arrays["f"], arrays["weights"]
            rest = arrays["J"] if "J" in arrays else arrays["J_regressor"] @ v_template
        except KeyError as err:
            raise MotionDataError(path, f"body model lacks {err}") from None
        return cls(name or Path(path).stem, np.asarray(v_template, float), np.asarray(faces, np.int64),
                   np.asarray(weights, float), np.asarray(rest, float)[:24])

    @classmethod
    def procedural(cls) -> BodyMesh:
        from vimogen_core.body.procedural import procedural_model_path

        path = procedural_model_path()
        return cls.from_file(path, name=f"procedural capsule body ({path.stem})")

    def posed_joints(self, local_rotmats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """local rotations (T, 22, 3, 3) -> joints (T, J, 3) and global rotations (T, J, 3, 3) of
        this body's J joints (hands follow the wrists), pelvis at the origin."""
        local = np.asarray(local_rotmats, dtype=np.float64).reshape(-1, NUM_JOINTS, 3, 3)
        n_joints = self.weights.shape[1]
        identity = np.broadcast_to(np.eye(3), local.shape[:-3] + (n_joints - NUM_JOINTS, 3, 3))
        local = np.concatenate([local, identity], axis=-3)  # (T, J, 3, 3)
        offsets = self.rest_joints.copy()
        offsets[0] = 0.0  # the pelvis at the origin
        offsets[1:] -= self.rest_joints[list(SMPL24_PARENTS[1:n_joints])]
        pelvis = torch.zeros(local.shape[:-3] + (3,), dtype=torch.float64)  # (T, 3)
        joints, rot = forward_kinematics(torch.from_numpy(local), pelvis, offsets, SMPL24_PARENTS[:n_joints])
        return joints.numpy(), rot.numpy()

    def pose(self, local_rotmats: np.ndarray) -> np.ndarray:
        """local rotations (T, 22, 3, 3) -> vertices (T, V, 3), pelvis at the origin."""
        posed, rot = self.posed_joints(local_rotmats)  # (T, J, 3), (T, J, 3, 3)
        n_joints = rot.shape[-3]
        translation = posed - np.einsum("...jab,jb->...ja", rot, self.rest_joints)  # (T, J, 3)
        # Linear blend skinning: per-vertex blended affine transform.
        t = len(rot)
        # One GEMM over all frames: (V, J) @ (J, T * 12) blends rotations and translations at once.
        affine = np.concatenate([rot.reshape(t, n_joints, 9), translation], axis=-1)  # (T, J, 12)
        blended = (self.weights @ affine.transpose(1, 0, 2).reshape(n_joints, t * 12)).reshape(-1, t, 12)
        blended = blended.transpose(1, 0, 2)  # (T, V, 12)
        vertices = blended[..., 9:].copy()  # (T, V, 3), then + blended rotation x rest vertex:
        for b in range(3):  # three broadcast multiply-adds beat a batched 3x3 matmul per vertex
            vertices += blended[..., b:9:3] * self.v_template[None, :, None, b]
        return vertices

    def part_boxes(self, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """vertices (T, V, 3) -> per-part bounding boxes lo, hi (T, P, 3) (empty parts: inverted)."""
        ordered = vertices[:, self._vertex_order]
        lo = np.full(vertices.shape[:1] + (len(self.part_vertices), 3), np.inf)
        hi = -lo
        lo[:, self._populated_parts] = np.minimum.reduceat(ordered, self._part_starts, axis=1)
        hi[:, self._populated_parts] = np.maximum.reduceat(ordered, self._part_starts, axis=1)
        return lo, hi

    def penetrating_faces(self, vertices: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """One frame: vertices (V, 3), part boxes (P, 3) -> (F,) bool: the face crosses a face of a
        part at least `min_tree_distance` steps away."""
        hit = np.zeros(len(self.faces), dtype=bool)
        pairs = self._pairs
        box_lo, box_hi = np.maximum(lo[pairs[:, 0]], lo[pairs[:, 1]]), np.minimum(hi[pairs[:, 0]], hi[pairs[:, 1]])
        touching = np.flatnonzero((box_lo <= box_hi).all(1))
        if not len(touching):
            return hit
        triangles = vertices[self.faces]  # (F, 3, 3)
        tri_lo, tri_hi = triangles.min(1), triangles.max(1)
        candidates_a, candidates_b = [], []
        for index in touching:  # only the part pairs whose boxes overlap in this frame
            a, b = pairs[index]
            faces_a, faces_b = self.part_faces[a], self.part_faces[b]
            faces_a = faces_a[((tri_hi[faces_a] >= box_lo[index]) & (tri_lo[faces_a] <= box_hi[index])).all(1)]
            faces_b = faces_b[((tri_hi[faces_b] >= box_lo[index]) & (tri_lo[faces_b] <= box_hi[index])).all(1)]
            if not len(faces_a) or not len(faces_b):
                continue
            overlap = ((tri_hi[faces_a, None] >= tri_lo[None, faces_b]) & (tri_lo[faces_a, None] <= tri_hi[None, faces_b])).all(-1)
            ia, ib = np.nonzero(overlap)
            candidates_a.append(faces_a[ia])
            candidates_b.append(faces_b[ib])
        if candidates_a:
            fa, fb = np.concatenate(candidates_a), np.concatenate(candidates_b)
            crossing = triangles_intersect(triangles[fa], triangles[fb])  # one exact test for all pairs
            hit[fa[crossing]] = True
            hit[fb[crossing]] = True
        return hit

    def body_penetration(self, local_rotmats: np.ndarray, frame_stride: int = 1) -> float:
        """Percentage of triangles in self-collision per frame, averaged over (every `frame_stride`-th) frame."""
        frames = np.asarray(local_rotmats)[::frame_stride]
        percentages = []
        for start in range(0, len(frames), 32):  # chunks bound the skinning memory
            vertices = self.pose(frames[start : start + 32])  # (t, V, 3)
            lo, hi = self.part_boxes(vertices)
            for t in range(len(vertices)):
                percentages.append(100.0 * self.penetrating_faces(vertices[t], lo[t], hi[t]).mean())
        return float(np.mean(percentages))
