"""MBench pose metrics: Body_Penetration and Pose_Quality, plus the inverse kinematics that turns
joint-only motion into SMPL-style rotations.

- `ik_fit(joints)`: local rotations (T, 22, 3, 3) from joint positions. Each joint's rotation is
  the minimal swing that turns its rest bone direction onto the observed one (Kabsch over the
  children where a joint has several: pelvis, spine3); twist about a bone is unobservable from
  positions and left at zero; end joints (head, feet, wrists) keep the identity.
- `BodyMesh`: a skinned mesh (SMPL-format arrays: v_template, f, weights, J; the project's
  procedural capsule body by default, a real SMPL file when the user has one; shape and pose
  correctives are not applied). `body_penetration` = percentage of its triangles that intersect
  another triangle, per frame, averaged. Triangles of body parts whose driving joints are within
  two steps in the kinematic tree (same part, parent/child, siblings, grandparent) are never
  tested against each other: those parts overlap by construction at every joint.
- `PosePrior`: distance of each pose to a bank of plausible poses (21 body-joint quaternions; per
  joint the geodesic angle 2 acos|<q, q'>|, combined as the root of the sum of squares; mean of
  the k nearest bank poses), x 10 as in the paper's Pose_Quality, averaged over frames. The default
  bank is the built-in motion-capture clips and their mirrors. `DistanceFieldPrior` loads a
  learned distance field (NRDF-style MLP over the same quaternions) from a user checkpoint.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError, pickled_objects_refused
from vimogen_core.motion.kinematics import forward_kinematics
from vimogen_core.motion.skeleton import PARENTS, SMPL24_PARENTS, rest_offsets

NUM_JOINTS = 22
POSE_QUALITY_SCALE = 10.0
IK_SOURCE = "IK fit from joints"
_CHILDREN = {j: [c for c, p in enumerate(PARENTS) if p == j] for j in range(NUM_JOINTS)}


# --- inverse kinematics ------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def swing_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 3, 3) minimal rotations taking unit directions a (..., 3) onto b (..., 3)."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    cos = np.sum(a * b, axis=-1)
    # Opposite directions: any perpendicular axis works for a half turn.
    opposite = cos < -1 + 1e-8
    if opposite.any():
        helper = np.where(np.abs(a[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        perpendicular = _unit(np.cross(a, helper))
        half_turn = 2 * perpendicular[..., :, None] * perpendicular[..., None, :] - np.eye(3)
    skew = np.zeros(a.shape[:-1] + (3, 3))
    skew[..., 0, 1], skew[..., 0, 2], skew[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    skew[..., 1, 0], skew[..., 2, 0], skew[..., 2, 1] = axis[..., 2], -axis[..., 1], axis[..., 0]
    factor = 1.0 / np.maximum(1.0 + cos, 1e-8)
    rotation = np.eye(3) + skew + skew @ skew * factor[..., None, None]
    if opposite.any():
        rotation[opposite] = half_turn[opposite]
    return rotation


def kabsch_rotation(rest: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """rest (K, 3), observed (..., K, 3) unit directions -> (..., 3, 3) best rotation R: R rest ~ observed."""
    h = np.einsum("ki,...kj->...ij", rest, observed)  # (..., 3, 3)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.swapaxes(-1, -2) @ u.swapaxes(-1, -2)))
    fix = np.ones(h.shape[:-2] + (3,))
    fix[..., 2] = d
    return vt.swapaxes(-1, -2) @ (fix[..., :, None] * u.swapaxes(-1, -2))


def ik_fit(joints: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """joints (T, 22, 3) -> local rotations (T, 22, 3, 3) on the skeleton with rest `offsets`."""
    joints = np.asarray(joints, dtype=np.float64)
    offsets = rest_offsets() if offsets is None else np.asarray(offsets, dtype=np.float64)
    rest_dir = _unit(offsets)
    global_rot = np.zeros(joints.shape[:-2] + (NUM_JOINTS, 3, 3))
    local = np.zeros_like(global_rot)
    for j in range(NUM_JOINTS):  # loop over the tree, vectorised over frames
        kids = _CHILDREN[j]
        parent_rot = np.broadcast_to(np.eye(3), joints.shape[:-2] + (3, 3)) if PARENTS[j] < 0 else global_rot[..., PARENTS[j], :, :]
        observed = _unit(joints[..., kids, :] - joints[..., j : j + 1, :])  # (T, K, 3)
        if len(kids) > 1:
            global_rot[..., j, :, :] = kabsch_rotation(rest_dir[kids], observed)
        elif len(kids) == 1:
            predicted = np.einsum("...ij,j->...i", parent_rot, rest_dir[kids[0]])
            global_rot[..., j, :, :] = swing_rotation(predicted, observed[..., 0, :]) @ parent_rot
        else:
            global_rot[..., j, :, :] = parent_rot
        local[..., j, :, :] = parent_rot.swapaxes(-1, -2) @ global_rot[..., j, :, :]
    return local


def motion_rotations(joints: np.ndarray | None, features: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Local rotations (T, 22, 3, 3) of a motion and where they came from."""
    if features is not None:
        from vimogen_core.motion.representation import features_to_rotations

        local, _ = features_to_rotations(torch.as_tensor(np.asarray(features), dtype=torch.float64))
        return local.numpy(), "276-d rotations"
    if joints is None:
        raise ValueError("a motion needs joints or features")
    return ik_fit(joints), IK_SOURCE


# --- body mesh and self-penetration ------------------------------------------------------------


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


# --- pose priors -------------------------------------------------------------------------------


def body_quaternions(local_rotmats: np.ndarray) -> np.ndarray:
    """(..., 22, 3, 3) -> (..., 21, 4) w-first unit quaternions of the body joints, w >= 0."""
    from vimogen_core.motion.rotations import matrix_to_quat

    quat = matrix_to_quat(torch.as_tensor(np.asarray(local_rotmats)[..., 1:, :, :], dtype=torch.float64)).numpy()
    return quat * np.where(quat[..., :1] < 0, -1.0, 1.0)


def pose_distances(queries: np.ndarray, bank: np.ndarray, k: int = 4, chunk: int = 256) -> np.ndarray:
    """queries (N, 21, 4), bank (M, 21, 4) -> (N,) mean distance (radians) to the k nearest bank poses."""
    bank32 = torch.as_tensor(bank, dtype=torch.float32)
    out = []
    for start in range(0, len(queries), chunk):
        q = torch.as_tensor(queries[start : start + chunk], dtype=torch.float32)
        dots = torch.einsum("njc,mjc->nmj", q, bank32).abs().clamp(max=1.0)  # (n, M, 21)
        distance = (2 * torch.arccos(dots)).square().sum(-1).sqrt()  # (n, M)
        out.append(distance.topk(min(k, len(bank)), dim=1, largest=False).values.mean(1))
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


class PosePrior:
    """k-nearest-neighbour distance to a bank of curated poses.

    Two banks: the poses' own rotations, and their IK re-fit from joints (twist-free), so that a
    joint-only motion (scored through `ik_fit`) is compared with poses represented the same way.
    """

    def __init__(self, bank: np.ndarray, swing_bank: np.ndarray, description: str, k: int = 4):
        self.bank = np.asarray(bank, dtype=np.float32)  # (M, 21, 4)
        self.swing_bank = np.asarray(swing_bank, dtype=np.float32)  # (M, 21, 4)
        self.description = description
        self.k = k

    @property
    def name(self) -> str:
        return f"knn-posebank (k={self.k}, {len(self.bank)} poses: {self.description})"

    @classmethod
    def from_motions(cls, motions: Sequence[tuple[np.ndarray, np.ndarray]], description: str, k: int = 4) -> PosePrior:
        """motions: (local rotations (T, 22, 3, 3), joints (T, 22, 3)) pairs."""
        bank = np.concatenate([body_quaternions(np.asarray(r)) for r, _ in motions])
        swing = np.concatenate([body_quaternions(ik_fit(j)) for _, j in motions])
        return cls(bank, swing, description, k)

    @classmethod
    def builtin(cls, exclude: Sequence[str] = ()) -> PosePrior:
        """Bank of every frame of the built-in mocap clips and their mirrors (minus `exclude`)."""
        from vimogen_core.motion.motion import mirror
        from vimogen_core.sources.deepmimic import builtin_clip_names, load_builtin_clip

        motions = []
        names = [n for n in builtin_clip_names() if n not in exclude]
        for name in names:
            motion = load_builtin_clip(name).motion
            for m in (motion, mirror(motion)):
                motions.append((m.local_rotmats.numpy(), m.joints.numpy()))
        return cls.from_motions(motions, f"{len(names)} built-in mocap clips + mirrors")

    def frame_distances(self, local_rotmats: np.ndarray, swing_only: bool = False) -> np.ndarray:
        bank = self.swing_bank if swing_only else self.bank
        return pose_distances(body_quaternions(local_rotmats), bank, self.k)

    def pose_quality(self, local_rotmats: np.ndarray, swing_only: bool = False) -> float:
        """x 10 the mean k-NN distance; `swing_only` for rotations that came from `ik_fit`."""
        return POSE_QUALITY_SCALE * float(self.frame_distances(local_rotmats, swing_only).mean())


class DistanceField(torch.nn.Module):
    """NRDF-style distance field: 21 quaternions (84) -> distance to the pose manifold (radians)."""

    def __init__(self, hidden: Sequence[int] = (256, 256, 256)):
        super().__init__()
        sizes = [84, *hidden, 1]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, quaternions: torch.Tensor) -> torch.Tensor:
        h = quaternions.reshape(len(quaternions), -1)
        for layer in self.layers[:-1]:
            h = torch.nn.functional.softplus(layer(h), beta=10)
        return torch.nn.functional.softplus(self.layers[-1](h)).squeeze(-1)


class DistanceFieldPrior:
    """Pose_Quality from a learned distance field (a user checkpoint, or one fitted here)."""

    def __init__(self, field: DistanceField, description: str):
        self.field = field.eval()
        self.description = description

    @property
    def name(self) -> str:
        return f"distance-field ({self.description})"

    @classmethod
    def load(cls, path: str | os.PathLike) -> DistanceFieldPrior:
        """A checkpoint holding the field's state dict ({"layers.0.weight": ..., ...}), optionally under
        "state_dict" or "model"; read with weights_only=True (or safetensors)."""
        path = Path(path)
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise MotionDataError(path, "distance-field checkpoint not found") from None
        except pickle.UnpicklingError as err:
            raise pickled_objects_refused(path, err) from None
        except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
            raise MotionDataError(path, f"unreadable distance-field checkpoint ({type(err).__name__}: {err})") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        weights = sorted((k for k in state if k.startswith("layers.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
        if not weights or state[weights[0]].shape[1] != 84 or state[weights[-1]].shape[0] != 1:
            raise MotionDataError(path, "expected an MLP distance field with layers.N.weight, 84 inputs and 1 output")
        field = DistanceField([int(state[k].shape[0]) for k in weights[:-1]])
        try:
            field.load_state_dict(state)
        except RuntimeError as err:
            raise MotionDataError(path, f"distance-field weights do not fit ({err})") from None
        return cls(field, path.name)

    @torch.no_grad()
    def pose_quality(self, local_rotmats: np.ndarray, swing_only: bool = False) -> float:
        """x 10 the field's mean distance (one field serves rotations and IK fits alike)."""
        quaternions = torch.as_tensor(body_quaternions(local_rotmats), dtype=torch.float32)
        return POSE_QUALITY_SCALE * float(self.field(quaternions).mean())


def fit_distance_field(prior: PosePrior, steps: int = 500, batch: int = 256, seed: int = 0,
                       hidden: Sequence[int] = (256, 256, 256)) -> DistanceField:
    """Train a DistanceField to reproduce the k-NN distance of bank poses perturbed by random
    rotations of growing size (NRDF's recipe: supervise with distances to the pose bank)."""
    from vimogen_core.motion.rotations import axis_angle_to_matrix, quat_to_matrix

    generator = torch.Generator().manual_seed(seed)
    bank = torch.as_tensor(prior.bank, dtype=torch.float64)
    field = DistanceField(hidden)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-3)
    for _ in range(steps):
        picks = torch.randint(len(bank), (batch,), generator=generator)
        scale = torch.rand(batch, 1, 1, generator=generator, dtype=torch.float64) * 1.5  # radians
        noise = axis_angle_to_matrix(torch.randn(batch, 21, 3, generator=generator, dtype=torch.float64) * scale)
        rotations = quat_to_matrix(bank[picks]) @ noise  # (B, 21, 3, 3)
        local = torch.cat([torch.eye(3, dtype=torch.float64).expand(batch, 1, 3, 3), rotations], dim=1)
        quaternions = body_quaternions(local.numpy())
        target = torch.as_tensor(pose_distances(quaternions, prior.bank, prior.k), dtype=torch.float32)
        loss = torch.nn.functional.l1_loss(field(torch.as_tensor(quaternions, dtype=torch.float32)), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return field.eval()


# --- the scorer the runner uses ----------------------------------------------------------------


class PoseScorer:
    """Scores Body_Penetration and Pose_Quality; its name says which mesh and prior produced them."""

    def __init__(self, mesh: BodyMesh, prior: PosePrior | DistanceFieldPrior, frame_stride: int = 1):
        self.mesh = mesh
        self.prior = prior
        self.frame_stride = frame_stride

    @property
    def name(self) -> str:
        stride = "" if self.frame_stride == 1 else f", every {self.frame_stride}th frame"
        return (f"mesh: {self.mesh.name} (parts < {self.mesh.min_tree_distance} tree steps apart not tested{stride}); "
                f"prior: {self.prior.name}; joint-only motions: IK fit")

    def score(self, dimension: str, joints: np.ndarray | None, features: np.ndarray | None) -> float:
        local, source = motion_rotations(joints, features)
        if dimension == "Body_Penetration":
            return self.mesh.body_penetration(local, self.frame_stride)
        if dimension == "Pose_Quality":
            return self.prior.pose_quality(local, swing_only=source == IK_SOURCE)
        raise ValueError(f"not a pose dimension: {dimension}")


def default_pose_scorer() -> PoseScorer:
    """Procedural body (or $VIMOGEN_SMPL_MODEL_PATH) and the built-in pose bank (or
    $VIMOGEN_POSE_PRIOR, a distance-field checkpoint)."""
    mesh_path = os.environ.get("VIMOGEN_SMPL_MODEL_PATH")
    mesh = BodyMesh.from_file(mesh_path) if mesh_path else BodyMesh.procedural()
    prior_path = os.environ.get("VIMOGEN_POSE_PRIOR")
    prior = DistanceFieldPrior.load(prior_path) if prior_path else PosePrior.builtin()
    return PoseScorer(mesh, prior)
