"""Generating under constraints with a trained flow-matching model, and making them exact.

Two ways to steer the sampler toward the known channels (`benchmarks/control.py` compares them on
the same checkpoint):
- "inpaint" (training-free inpainting): after every Euler step to time s the known channels are
  put where the straight path from their target to the motion's own noise is at s,
  (1 - s) target + s noise, so the network sees them as it saw data at that noise level and
  fills in the rest around them (the last step leaves them as the network made them).
- "guidance": every step the gradient of the known channels' squared error in the network's
  clean estimate (metres for positions), taken through the network, is subtracted from the
  velocity; it needs a backward pass per step.
Either way the motion is then smoothed and cleaned up as every generated motion is, except that
the fused joint paths go through the pinned positions and nothing re-canonicalises (the
constraints fix the motion's frame); then `enforce` makes the constraints exact:
pinned rotations are set, and each pinned joint's remaining offset is applied to it and the
joints it carries, exactly at the pinned frames and fading out with a Gaussian around them, so a
keyframe does not pop.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vimogen_core.control.constraints import ConstraintError, Targets
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.cleanup import clean_features, extend_one_frame
from vimogen_core.motion.representation import (FEATURE_DIM, encode_features, facing_turn_angle, features_to_joints,
                                                 features_to_rotations)
from vimogen_core.motion.skeleton import NUM_JOINTS, PARENTS

METHODS = ("inpaint", "guidance")
FADE_FRAMES = 8.0  # Gaussian sigma (frames) over which a keyframe's correction fades out
GUIDANCE_STRENGTH = 0.5


def _subtrees() -> list[np.ndarray]:
    """Each joint and every joint below it in the skeleton."""
    children = [[j] for j in range(NUM_JOINTS)]
    for joint in range(NUM_JOINTS - 1, 0, -1):  # parents come before children in PARENTS
        children[PARENTS[joint]].extend(children[joint])
    return [np.array(sorted(c)) for c in children]


SUBTREES = _subtrees()


class Inpainting:
    """Known channels replaced after every step (see the module docstring)."""

    def __init__(self, known: torch.Tensor, target: torch.Tensor):
        self.known, self.target = known, target  # (B, T, D) bool, normalised values
        self.noise: torch.Tensor | None = None

    def velocity(self, velocity_fn, noise: torch.Tensor):
        self.noise = noise
        return velocity_fn

    def after_step(self, x: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        if float(s_next) == 0.0:
            # The last step keeps the network's own values for the known channels too: they agree
            # with the frames it generated around them, so `enforce` can pin them with a faded
            # offset instead of leaving a step where pinned meets generated.
            return x
        known_now = (1 - s_next) * self.target + s_next * self.noise
        return torch.where(self.known, known_now.to(x.dtype), x)


class Guidance:
    """The pinned channels' squared error in the network's clean estimate, differentiated through
    the network, pulls the state after each step: x -= strength / 2 * grad (strength 1 would close
    the error in one step if the estimate followed the state one to one). Errors are in normalised
    units, i.e. metres per channel divided by the data's spread in that channel."""

    def __init__(self, known: torch.Tensor, target: torch.Tensor, strength: float):
        self.known, self.target, self.strength = known, target, strength
        self.pull: torch.Tensor | None = None

    def velocity(self, velocity_fn, noise: torch.Tensor):
        def guided(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                v = velocity_fn(x_in, s)
                estimate = x_in - s.reshape(-1, 1, 1) * v  # (B, T, D) the clean motion, normalised
                error = torch.where(self.known, estimate - self.target, torch.zeros_like(estimate))
                (grad,) = torch.autograd.grad(error.pow(2).sum(), x_in)
            self.pull = -0.5 * self.strength * grad
            return v.detach()

        return guided

    def after_step(self, x: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return x + self.pull.to(x.dtype)


def spread_correction(offset: np.ndarray, pinned: np.ndarray, fade: float = FADE_FRAMES) -> np.ndarray:
    """offset, pinned (T, C): per column the offset is exact at pinned frames; away from them it
    carries on from the nearest pinned frame on each side at that frame's rate of change (so a
    pinned stretch such as a prefix joins without a kink), fading as a Gaussian of the distance
    (sigma `fade` frames), and the two sides are blended by position between them."""
    n = len(offset)
    t = np.arange(n)[:, None]
    prev = np.maximum.accumulate(np.where(pinned, t, -1), axis=0)  # (T, C) last pinned frame at or before t
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(pinned, t, n), 0), axis=0), 0)  # first at or after
    # The offset's rate of change at each pinned frame, from its pinned neighbour (0 where alone).
    rate_out = np.zeros_like(offset)  # leaving a pinned stretch forwards
    rate_out[1:] = np.where(pinned[1:] & pinned[:-1], offset[1:] - offset[:-1], 0.0)
    rate_in = np.zeros_like(offset)  # entering one from before
    rate_in[:-1] = np.where(pinned[:-1] & pinned[1:], offset[1:] - offset[:-1], 0.0)
    has_prev, has_next = prev >= 0, nxt < n
    cols = np.arange(offset.shape[1])[None, :]
    a, b = np.clip(prev, 0, None), np.clip(nxt, None, n - 1)
    from_prev = np.where(has_prev, (offset[a, cols] + (t - prev) * rate_out[a, cols]) * np.exp(-0.5 * ((t - prev) / fade) ** 2), 0.0)
    from_next = np.where(has_next, (offset[b, cols] - (nxt - t) * rate_in[b, cols]) * np.exp(-0.5 * ((nxt - t) / fade) ** 2), 0.0)
    gap = np.maximum(nxt - prev, 1)
    share_next = np.where(has_prev & has_next, (t - prev) / gap, np.where(has_next, 1.0, 0.0))
    return (1 - share_next) * from_prev + share_next * from_next


def enforce(feats: np.ndarray, targets: Targets, fade: float = FADE_FRAMES) -> np.ndarray:
    """(T, 276) features of a consistent motion meeting the targets exactly (see the module docstring)."""
    f = torch.from_numpy(np.asarray(feats, dtype=np.float64)).clone()
    rotations = torch.from_numpy(targets.rotation_channels)
    f = torch.where(rotations, torch.from_numpy(targets.values.astype(np.float64)), f)
    local, _ = features_to_rotations(f)
    joints = features_to_joints(f).numpy().copy()  # (T, 22, 3)
    if targets.heading is not None:
        local, joints = _turned_to_heading(local, joints, targets.heading, fade)
    mask, values = targets.joint_mask, targets.joint_values
    for joint in range(NUM_JOINTS):  # parents first: a child's offset is what remains after its parent's
        if joint == 1 and len(targets.relative_joints):  # the pelvis is final now
            mask, values = _with_relative(targets, local, joints)
        pinned = mask[:, joint]  # (T, 3)
        if not pinned.any():
            continue
        offset = np.where(pinned, values[:, joint] - joints[:, joint], 0.0)
        joints[:, SUBTREES[joint]] += spread_correction(offset, pinned, fade)[:, None, :]
    return encode_features(*extend_one_frame(local, torch.from_numpy(joints))).float().numpy()


def _turned_to_heading(local: torch.Tensor, joints: np.ndarray, heading: np.ndarray,
                       fade: float) -> tuple[torch.Tensor, np.ndarray]:
    """Each frame's body turned about its pelvis so it faces `heading` (radians, NaN: free; the
    turn fades out around the given frames like a pinned offset)."""
    current = -facing_turn_angle(local[:, 0]).numpy()  # (T,) the way each frame faces now
    given = ~np.isnan(heading)
    delta = np.angle(np.exp(1j * (np.nan_to_num(heading) - current)))  # wrapped to (-pi, pi]
    delta = np.unwrap(np.where(given, delta, 0.0))
    turn_by = spread_correction(np.where(given, delta, 0.0)[:, None], given[:, None], fade)[:, 0]
    turn = rot.rotation_about_z(torch.from_numpy(turn_by)).to(local.dtype)  # (T, 3, 3)
    local = local.clone()
    local[:, 0] = turn @ local[:, 0]
    pelvis = joints[:, :1]
    joints = pelvis + np.einsum("tij,tkj->tki", turn.numpy(), joints - pelvis)
    return local, joints


def _with_relative(targets: Targets, local: torch.Tensor, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The joint targets with the relatively kept joints placed on the motion's pelvis, turned from
    the source's heading frame to the motion's heading at each frame."""
    turn_back = rot.rotation_about_z(-facing_turn_angle(local[:, 0])).numpy()  # (T, 3, 3)
    placed = joints[:, :1] + np.einsum("tij,tkj->tki", turn_back, np.nan_to_num(targets.relative_positions))
    pinned = np.zeros_like(targets.joint_mask)
    pinned[:, targets.relative_joints] = ~np.isnan(targets.relative_positions[:, targets.relative_joints])
    return targets.joint_mask | pinned, np.where(pinned, placed, targets.joint_values)


def _pelvis_only(joint_mask: np.ndarray) -> np.ndarray:
    mask = np.zeros_like(joint_mask)
    mask[:, 0] = joint_mask[:, 0]
    return mask


def generate_controlled(generator, prompts: list[str], targets: list[Targets], steps: int = 50,
                        cfg_scale: float | None = None, seed: int = 0, method: str = "inpaint",
                        strength: float = GUIDANCE_STRENGTH, smooth: bool = True, exact: bool = True) -> list[np.ndarray]:
    """One motion per (prompt, targets), in text mode, as (T, 276) features; `exact=False` leaves
    out the final enforcement (to measure how close the sampler itself comes)."""
    if method not in METHODS:
        raise ConstraintError(f"unknown control method {method!r}; use one of {', '.join(METHODS)}")
    if len(prompts) != len(targets):
        raise ConstraintError(f"{len(prompts)} prompts but {len(targets)} sets of constraints")
    lengths = [t.n_frames for t in targets]
    generator.check_request(prompts, lengths, None)
    b, t_max = len(prompts), max(lengths)
    known = torch.zeros(b, t_max, FEATURE_DIM, dtype=torch.bool)
    target = torch.zeros(b, t_max, FEATURE_DIM)
    for row, t in enumerate(targets):
        known[row, : t.n_frames] = torch.from_numpy(t.mask)
        target[row, : t.n_frames] = torch.from_numpy(generator.normalizer.normalize(t.values).astype(np.float32))
    device = generator.device
    known, target = known.to(device), target.to(device)
    if method == "inpaint":
        steer = Inpainting(known, target)
    else:
        steer = Guidance(known, target, strength)
    cfg_scale = generator.train_config.guidance_scale if cfg_scale is None else cfg_scale
    sample = generator.sample(list(prompts), lengths, [None] * b, steps, cfg_scale, seed, steer=steer)
    motions = generator.finish(sample, lengths, smooth, cleanup=None)
    if generator.cleanup is not None:
        cleanup = replace(generator.cleanup, canonical=False)
        # Only the pelvis is pinned in the fused paths (whose time scale spreads its offsets over
        # seconds); the body's short time scale would turn a pinned joint into a spike, so its
        # offsets are left to `enforce`, which fades them out.
        motions = [clean_features(m, cleanup, (_pelvis_only(t.joint_mask), t.joint_values)) for m, t in zip(motions, targets)]
    return [enforce(m, t) for m, t in zip(motions, targets)] if exact else motions
