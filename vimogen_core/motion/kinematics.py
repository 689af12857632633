"""Forward kinematics on the 22-joint skeleton, vectorised over all leading dims."""
from __future__ import annotations

import numpy as np
import torch

from vimogen_core.motion.skeleton import PARENTS, rest_offsets


def forward_kinematics(
    local_rotmats: torch.Tensor,
    transl: torch.Tensor,
    offsets: np.ndarray | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """local_rotmats (..., 22, 3, 3), transl (..., 3) -> joints (..., 22, 3), global_rotmats (..., 22, 3, 3).

    SMPL convention: the root rotation turns about the pelvis, so pelvis = transl + offsets[0].
    The loop runs over the 22 joints of the tree, never over frames.
    """
    if offsets is None:
        offsets = rest_offsets()
    offsets = torch.as_tensor(offsets, dtype=local_rotmats.dtype, device=local_rotmats.device)
    global_rots: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    for j, parent in enumerate(PARENTS):
        if parent < 0:
            global_rots.append(local_rotmats[..., 0, :, :])
            positions.append(transl + offsets[0])
        else:
            global_rots.append(global_rots[parent] @ local_rotmats[..., j, :, :])
            positions.append(positions[parent] + (global_rots[parent] @ offsets[j, :, None])[..., 0])
    return torch.stack(positions, dim=-2), torch.stack(global_rots, dim=-3)
