"""Losses on the joints the denoised estimate decodes to, in metres (after MDM's geometric losses).

The feature loss is taken in normalised units, and there the body is nearly invisible: the global
joint positions are normalised by a spread dominated by how far clips travel (metres), so a foot
swinging 30 cm about the pelvis moves its channels by a tenth of a unit. These terms weigh what a
viewer sees, each against a typical scale so that 1.0 means an error of that size:
- `relative`: joints relative to the pelvis, against the target's (scale 5 cm);
- `consistency`: the position channels' frame-to-frame differences against the velocity channels
  of the same estimate (scale 10 cm per frame: early in training they disagree by tens of
  centimetres), so both decodes describe one motion;
- `foot`: foot velocity on frames where the target's foot is planted (it moves under 1 cm per
  frame, MBench's contact step), scale 1 cm per frame, averaged over all frames;
- `ground`: the height of the lower foot (the lowest of both feet and ankles) against the target's,
  scale 2 cm. The others are squared errors, whose optimum under an uncertain gait phase is the
  mean pose, and the mean of a stride has both feet off the floor (the floating feet of an
  under-trained model); the lower foot's height is low in every phase of the data, so its error is
  small only for an estimate with a foot on the floor.
`foot` and `ground` compare global positions with the target's, so samples whose global channels are
not supervised (video-recovered, `TrainBatch.loss_dims`) take only `relative` and `consistency`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vimogen_core.motion.representation import JOINT_POS, JOINT_VEL, Normalizer

FEET = (10, 11)
FEET_AND_ANKLES = (7, 8, 10, 11)
RELATIVE_SCALE = 0.05  # m
CONSISTENCY_SCALE = 0.1  # m per frame
FOOT_SCALE = 0.01  # m per frame
CONTACT_STEP = 0.01  # m per frame: MBench's foot-contact step
GROUND_SCALE = 0.02  # m


@dataclass(frozen=True)
class GeometryTerms:
    relative: torch.Tensor
    consistency: torch.Tensor
    foot: torch.Tensor
    ground: torch.Tensor

    def total(self) -> torch.Tensor:
        return self.relative + self.consistency + self.foot + self.ground


class JointGeometryLoss:
    def __init__(self, normalizer: Normalizer):
        self.mean = torch.as_tensor(normalizer.mean)
        self.std = torch.as_tensor(normalizer.std)

    def _joints(self, x: torch.Tensor, dims: slice) -> torch.Tensor:
        """(B, T, 276) normalised -> (B, T, 22, 3) metres of the channel group `dims`."""
        mean, std = self.mean[dims].to(x.device), self.std[dims].to(x.device)
        return (x[..., dims] * std + mean).unflatten(-1, (22, 3))

    def __call__(self, x0_hat: torch.Tensor, x0: torch.Tensor, frame_mask: torch.Tensor,
                 global_rows: torch.Tensor | None = None) -> GeometryTerms:
        """x0_hat, x0 (B, T, 276) normalised; frame_mask (B, T) True on real frames; global_rows (B,)
        True where the target's global positions are supervised (None: every row)."""
        mask = frame_mask.float()  # (B, T)
        # Every term is a sum over frames divided by the valid frames, like the feature loss, so the
        # training loop's per-rank frame-share weighting keeps DDP's gradient equal to one process's.
        frames = mask.sum().clamp(min=1)
        global_mask = mask if global_rows is None else mask * global_rows.to(mask)[:, None]  # (B, T)
        pairs = mask[:, 1:] * mask[:, :-1]  # (B, T-1): both frames real
        pos_hat, pos = self._joints(x0_hat, JOINT_POS), self._joints(x0, JOINT_POS)  # (B, T, 22, 3)
        vel_hat = self._joints(x0_hat, JOINT_VEL)
        rel_err = ((pos_hat - pos_hat[..., :1, :]) - (pos - pos[..., :1, :])).pow(2).sum(-1).mean(-1)  # (B, T)
        relative = (rel_err * mask).sum() / frames / RELATIVE_SCALE**2
        step_hat = pos_hat[:, 1:] - pos_hat[:, :-1]  # (B, T-1, 22, 3)
        cons_err = (step_hat - vel_hat[:, :-1]).pow(2).sum(-1).mean(-1)  # (B, T-1)
        consistency = (cons_err * pairs).sum() / frames / CONSISTENCY_SCALE**2
        feet, feet_hat = pos[:, :, FEET], vel_hat[:, :, FEET]  # (B, T, 2, 3)
        step = (feet[:, 1:] - feet[:, :-1]).norm(dim=-1)  # (B, T-1, 2)
        step = torch.cat([step, step[:, -1:]], dim=1)  # (B, T, 2)
        # A motion's last frame repeats its previous step (MBench's padding), whatever follows it in
        # the batch: padding behind it depends on its batch mates, which differ between DDP ranks.
        last = frame_mask & ~torch.cat([frame_mask[:, 1:], torch.zeros_like(frame_mask[:, :1])], dim=1)  # (B, T)
        step = torch.where(last[..., None], torch.roll(step, 1, dims=1), step)
        planted = (step < CONTACT_STEP).float() * global_mask[..., None]
        foot = (feet_hat.pow(2).sum(-1) * planted).sum() / frames / FOOT_SCALE**2
        lowest_hat = pos_hat[:, :, FEET_AND_ANKLES, 2].amin(-1)  # (B, T)
        lowest = pos[:, :, FEET_AND_ANKLES, 2].amin(-1)
        ground = ((lowest_hat - lowest).pow(2) * global_mask).sum() / frames / GROUND_SCALE**2
        return GeometryTerms(relative, consistency, foot, ground)
