"""Forward kinematics on the 22-joint skeleton (or any joint tree), vectorised over all leading dims."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vimogen_core.motion.skeleton import PARENTS, SMPL24_PARENTS, rest_offsets, rest_offsets24


def forward_kinematics(
    local_rotmats: torch.Tensor,
    transl: torch.Tensor,
    offsets: np.ndarray | torch.Tensor | None = None,
    parents: Sequence[int] = PARENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """local_rotmats (..., J, 3, 3), transl (..., 3) -> joints (..., J, 3), global_rotmats (..., J, 3, 3).

    SMPL convention: the root rotation turns about the pelvis, so pelvis = transl + offsets[0].
    `parents` lists each joint's parent (-1 for the root), parents before children; the default is
    the 22-joint skeleton. `offsets` (J, 3), or (..., J, 3) where joints also translate per frame
    (BVH position channels). The loop runs over the joints of the tree, never over frames.
    """
    if offsets is None:
        offsets = rest_offsets()
    offsets = torch.as_tensor(offsets, dtype=local_rotmats.dtype, device=local_rotmats.device)
    global_rots: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    for j, parent in enumerate(parents):
        if parent < 0:
            global_rots.append(local_rotmats[..., j, :, :])
            positions.append(transl + offsets[..., j, :])
        else:
            global_rots.append(global_rots[parent] @ local_rotmats[..., j, :, :])
            positions.append(positions[parent] + (global_rots[parent] @ offsets[..., j, :, None])[..., 0])
    return torch.stack(positions, dim=-2), torch.stack(global_rots, dim=-3)


def rest_joints24() -> np.ndarray:
    """(24, 3) rest joint positions (pelvis at the origin, every rotation the identity), SMPL body frame."""
    identity = torch.eye(3, dtype=torch.float64).expand(len(SMPL24_PARENTS), 3, 3)
    joints, _ = forward_kinematics(identity, torch.zeros(3, dtype=torch.float64), rest_offsets24(), SMPL24_PARENTS)
    return joints.numpy()
