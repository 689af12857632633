"""Batched rotation conversions in torch. Quaternions are w-first; rot6d follows DESIGN.md:
the first two columns of the matrix stored row by row, [R00, R01, R10, R11, R20, R21]."""
from __future__ import annotations

import roma
import torch


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors -> (..., 3, 3)."""
    return roma.rotvec_to_rotmat(axis_angle)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) rotation vectors with angle in [0, pi]."""
    return roma.rotmat_to_rotvec(matrix)


def quat_to_matrix(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """(..., 4) w-first quaternions (normalised here) -> (..., 3, 3)."""
    xyzw = torch.cat([quat_wxyz[..., 1:], quat_wxyz[..., :1]], dim=-1)
    return roma.unitquat_to_rotmat(xyzw / xyzw.norm(dim=-1, keepdim=True))


def matrix_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) w-first unit quaternions with w >= 0."""
    xyzw = roma.rotmat_to_unitquat(matrix)
    wxyz = torch.cat([xyzw[..., 3:], xyzw[..., :3]], dim=-1)
    return torch.where(wxyz[..., :1] < 0, -wxyz, wxyz)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): first two columns, row by row."""
    return matrix[..., :, :2].reshape(*matrix.shape[:-2], 6)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two stored columns."""
    return roma.special_gramschmidt(rot6d.reshape(*rot6d.shape[:-1], 3, 2))


def slerp_frames(rotmats: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Geodesic interpolation from frame i0 to frame i1 of `rotmats` (N, ..., 3, 3) by `weight`
    (M, ...), for M output frames -> (M, ..., 3, 3). Every source frame becomes a quaternion once,
    and the interpolation itself is elementwise (no per-output-frame matrix logarithm)."""
    quats = roma.rotmat_to_unitquat(rotmats)  # (N, ..., 4)
    q0, q1 = quats[i0], quats[i1]  # (M, ..., 4)
    q1 = torch.where((q0 * q1).sum(-1, keepdim=True) < 0, -q1, q1)  # the shorter arc
    # Half the angle between the quaternions; atan2 of chord lengths stays accurate near zero.
    half = torch.atan2((q1 - q0).norm(dim=-1, keepdim=True), (q1 + q0).norm(dim=-1, keepdim=True))
    theta = 2 * half
    w = weight[..., None]
    sin_theta = torch.sin(theta)
    tiny = sin_theta < 1e-9  # (nearly) equal rotations: linear blend, renormalised below
    safe = torch.where(tiny, torch.ones_like(sin_theta), sin_theta)
    a = torch.where(tiny, 1 - w, torch.sin((1 - w) * theta) / safe)
    b = torch.where(tiny, w, torch.sin(w * theta) / safe)
    q = a * q0 + b * q1
    return roma.unitquat_to_rotmat(q / q.norm(dim=-1, keepdim=True))


def matrix_power(matrix: torch.Tensor, fraction: float) -> torch.Tensor:
    """The rotation by `fraction` of the angle of `matrix`, about the same axis."""
    return axis_angle_to_matrix(matrix_to_axis_angle(matrix) * fraction)


def rotation_about_z(angle: torch.Tensor) -> torch.Tensor:
    """(...,) angles -> (..., 3, 3) rotations about the world up axis."""
    axis = torch.zeros(*angle.shape, 3, dtype=angle.dtype, device=angle.device)
    axis[..., 2] = angle
    return axis_angle_to_matrix(axis)
