"""MBench Pose_Quality: how far each pose lies from plausible ones.

`PosePrior`: distance of each pose to a bank of plausible poses (21 body-joint quaternions; per
joint the geodesic angle 2 acos|<q, q'>|, combined as the root of the sum of squares; mean of the k
nearest bank poses), x 10 as in the paper's Pose_Quality, averaged over frames. The default bank is
the built-in motion-capture clips and their mirrors. `DistanceFieldPrior` loads a learned distance
field (NRDF-style MLP over the same quaternions) from a user checkpoint.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vimogen_core.bench.ik import ik_fit
from vimogen_core.errors import MotionDataError, pickled_objects_refused

POSE_QUALITY_SCALE = 10.0


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
