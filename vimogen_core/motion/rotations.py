"""Batched rotation conversions in torch. Quaternions are w-first; rot6d follows DESIGN.md:
the first two columns of the matrix stored row by row, [R00, R01, R10, R11, R20, R21]."""
from __future__ import annotations

import torch

# Below this angle (rad) the Rodrigues coefficients come from their Taylor series: sin(t)/t and
# (1 - cos t)/t^2 lose all precision to cancellation as t -> 0.
_SMALL_ANGLE = 1e-4


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices [v]x."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors -> (..., 3, 3) by Rodrigues' formula R = I + a [v]x + b [v]x^2."""
    angle = axis_angle.norm(dim=-1)[..., None, None]  # (..., 1, 1)
    small = angle < _SMALL_ANGLE
    safe = torch.where(small, torch.ones_like(angle), angle)
    a = torch.where(small, 1 - angle**2 / 6, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - angle**2 / 24, (1 - torch.cos(safe)) / safe**2)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) rotation vectors with angle in [0, pi], through the quaternion
    (accurate at every angle, unlike acos of the trace near 0 and pi)."""
    quat = matrix_to_quat(matrix)  # (..., 4), w >= 0
    w, xyz = quat[..., :1], quat[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, w)
    small = sin_half < _SMALL_ANGLE
    scale = torch.where(small, 2 / w.clamp_min(0.5), angle / torch.where(small, torch.ones_like(sin_half), sin_half))
    return xyz * scale


def quat_to_matrix(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """(..., 4) w-first quaternions (normalised here) -> (..., 3, 3)."""
    w, x, y, z = (quat_wxyz / quat_wxyz.norm(dim=-1, keepdim=True)).unbind(-1)
    entries = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(entries, dim=-1).reshape(*quat_wxyz.shape[:-1], 3, 3)


def matrix_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) w-first unit quaternions with w >= 0. Shepperd's method: of the four
    ways to read the quaternion off the matrix, take the one dividing by its largest component."""
    m = matrix.reshape(*matrix.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    trace = m00 + m11 + m22
    candidates = torch.stack(
        [
            torch.stack([1 + trace, m21 - m12, m02 - m20, m10 - m01], dim=-1),  # w largest
            torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], dim=-1),  # x largest
            torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], dim=-1),  # y largest
            torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], dim=-1),  # z largest
        ],
        dim=-2,
    )  # (..., 4, 4): each row is 4 q_k q (k = its largest component), up to scale
    best = torch.stack([trace, m00, m11, m22], dim=-1).argmax(dim=-1)  # (...,)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): first two columns, row by row."""
    return matrix[..., :, :2].reshape(*matrix.shape[:-2], 6)


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt on the two stored columns; the third is their cross product."""
    columns = rot6d.reshape(*rot6d.shape[:-1], 3, 2)
    first = _unit(columns[..., 0])
    second = _unit(columns[..., 1] - (first * columns[..., 1]).sum(-1, keepdim=True) * first)
    return torch.stack([first, second, torch.linalg.cross(first, second, dim=-1)], dim=-1)


def _unit(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """F.normalize's result, by an elementwise norm: torch's vector norm of a strided view (a column
    of the 6D layout) takes 5x longer, which the clean-up of every generated motion pays."""
    return vectors / (vectors * vectors).sum(-1, keepdim=True).sqrt().clamp_min(eps)


def slerp_frames(rotmats: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Geodesic interpolation from frame i0 to frame i1 of `rotmats` (N, ..., 3, 3) by `weight`
    (M, ...), for M output frames -> (M, ..., 3, 3). Every source frame becomes a quaternion once,
    and the interpolation itself is elementwise (no per-output-frame matrix logarithm)."""
    quats = matrix_to_quat(rotmats)  # (N, ..., 4)
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
    return quat_to_matrix(q)


def matrix_power(matrix: torch.Tensor, fraction: float) -> torch.Tensor:
    """The rotation by `fraction` of the angle of `matrix`, about the same axis."""
    return axis_angle_to_matrix(matrix_to_axis_angle(matrix) * fraction)


def rotation_about_axis(axis: int, angle: torch.Tensor) -> torch.Tensor:
    """(...,) angles -> (..., 3, 3) rotations about coordinate axis 0 (X), 1 (Y) or 2 (Z)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    first, second = (axis + 1) % 3, (axis + 2) % 3  # the plane turned, in right-handed order
    matrix = torch.zeros(*angle.shape, 3, 3, dtype=angle.dtype, device=angle.device)
    matrix[..., axis, axis] = 1.0
    matrix[..., first, first], matrix[..., first, second] = cos, -sin
    matrix[..., second, first], matrix[..., second, second] = sin, cos
    return matrix


def rotation_about_z(angle: torch.Tensor) -> torch.Tensor:
    """(...,) angles -> (..., 3, 3) rotations about the world up axis."""
    return rotation_about_axis(2, angle)


def rotation_between(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., 3), (..., 3) -> (..., 3, 3): the smallest rotation turning direction u onto direction v
    (neither needs unit length). Through the half-way quaternion (1 + u.v, u x v), which stays exact
    for nearly equal directions; for opposite ones any half turn about an axis normal to u does."""
    u = torch.nn.functional.normalize(u, dim=-1)
    v = torch.nn.functional.normalize(v, dim=-1)
    w = 1 + (u * v).sum(-1, keepdim=True)
    axis = torch.linalg.cross(u, v, dim=-1)
    # Opposite directions: the normal to u with the larger of its cross products with X and Y.
    normal_x = torch.linalg.cross(u, torch.tensor([1.0, 0.0, 0.0], dtype=u.dtype).expand_as(u), dim=-1)
    normal_y = torch.linalg.cross(u, torch.tensor([0.0, 1.0, 0.0], dtype=u.dtype).expand_as(u), dim=-1)
    normal = torch.where(normal_x.norm(dim=-1, keepdim=True) > 0.5, normal_x, normal_y)
    opposite = w < 1e-9
    quat = torch.where(opposite, torch.cat([torch.zeros_like(w), normal], -1), torch.cat([w, axis], -1))
    return quat_to_matrix(quat)


def align_vectors(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., K, 3) directions, (..., K, 3) directions -> (..., 3, 3): the rotation R that best turns
    each source[k] onto target[k] in least squares (Kabsch: SVD of sum_k target_k source_k^T, with the
    sign of the last singular direction fixed so R is a rotation, not a reflection)."""
    cov = target.transpose(-1, -2) @ source  # (..., 3, 3)
    u, _, vh = torch.linalg.svd(cov)
    best = u @ vh
    # det of a 3x3 as the triple product of its columns (torch's batched LU is slow for tiny matrices)
    sign = torch.sign((torch.linalg.cross(best[..., :, 0], best[..., :, 1], dim=-1) * best[..., :, 2]).sum(-1))
    fix = torch.ones(*sign.shape, 3, dtype=cov.dtype)
    fix[..., 2] = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (u * fix[..., None, :]) @ vh
