"""BVH motion capture files of any humanoid skeleton: the parser and the file's own kinematics.

1. Parse the file: hierarchy (joint names, parents, rest offsets, channels in the order written,
   so every joint may have its own rotation order and position channels) and the frame table.
   Every error names the file and the line.
2. Forward kinematics over the file's own hierarchy, vectorised over frames: each joint's world
   position and rotation. Position channels give the joint's translation on the axes they name in
   place of its OFFSET (exporters that write them on every joint, as Mixamo's, repeat the OFFSET
   there); rotations compose in channel order, R = R_first @ R_second @ R_third.

Retargeting a parsed clip onto the SMPL 22-joint skeleton is `sources/bvh_retarget.py`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vimogen_core.errors import MotionDataError
from vimogen_core.motion import rotations as rot
from vimogen_core.motion.kinematics import forward_kinematics

# Frame Time is printed with 6-8 digits; a rate this close (relative) to a whole number is that number
# (29.97 fps video is 1e-3 away from 30 and stays 29.97).
FPS_ROUNDING = 1e-4
AXES = {"x": 0, "y": 1, "z": 2}  # axis letters (of channels, of the up axis) -> coordinate index


@dataclass(frozen=True)
class BvhClip:
    """A parsed BVH file: joints in file order (parents before children)."""

    path: str
    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray  # (J, 3) rest offsets, file units and axes
    channels: tuple[tuple[str, ...], ...]  # per joint, e.g. ("Xposition", ..., "Zrotation"), as written
    joint_lines: tuple[int, ...]  # the line declaring each joint
    frame_time: float
    frames: np.ndarray  # (N, total channels) float64

    @property
    def fps(self) -> float:
        """1 / Frame Time, read as the whole rate the writer meant when it is within printing precision
        of one (0.008333 -> 120, not 120.0048, so a 120 fps take of T frames keeps its length at 20 fps)."""
        rate = 1.0 / self.frame_time
        return float(round(rate)) if abs(rate - round(rate)) < FPS_ROUNDING * rate else rate


def _number(path, line_no: int, token: str, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise MotionDataError(path, f"line {line_no}: {what} is not a number: {token!r}") from None
    if not np.isfinite(value):
        raise MotionDataError(path, f"line {line_no}: {what} is not finite: {token!r}")
    return value


_CHANNEL = re.compile(r"^[XYZ](position|rotation)$")


def read_bvh(path: str | os.PathLike) -> BvhClip:
    """Parse a BVH file (see the module docstring); MotionDataError names the file and line."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MotionDataError(path, "file not found") from None
    except UnicodeDecodeError as err:
        raise MotionDataError(path, f"not a text file ({err.reason} at byte {err.start})") from None
    lines = text.split("\n")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    joint_lines: list[int] = []
    stack: list[int] = []  # open blocks: a joint index, or -1 for an End Site
    pending: int | None = None  # declared, its "{" not yet seen
    seen_hierarchy = False
    motion_line = None
    for number, raw in enumerate(lines, start=1):
        tokens = raw.split()
        if not tokens:
            continue
        opens = len(tokens) > 1 and tokens[-1] == "{"  # "JOINT Name {" on one line
        if opens:
            tokens = tokens[:-1]
        keyword = tokens[0].upper()
        if pending is not None and keyword != "{":
            raise MotionDataError(path, f"line {number}: expected '{{' to open the block declared on the line before")
        if not seen_hierarchy:
            if keyword != "HIERARCHY":
                raise MotionDataError(path, f"line {number}: expected HIERARCHY, found {raw.strip()[:40]!r}")
            seen_hierarchy = True
        elif keyword in ("ROOT", "JOINT"):
            if len(tokens) < 2:
                raise MotionDataError(path, f"line {number}: {tokens[0]} without a name")
            if (keyword == "ROOT") != (not stack):
                raise MotionDataError(path, f"line {number}: {'ROOT inside a joint' if stack else 'JOINT outside the ROOT'}")
            if names and not stack:
                raise MotionDataError(path, f"line {number}: a second ROOT; only one skeleton per file is read")
            if stack and stack[-1] < 0:
                raise MotionDataError(path, f"line {number}: a joint inside an End Site")
            name = " ".join(tokens[1:])
            if name in names:
                raise MotionDataError(path, f"line {number}: joint {name!r} declared twice (first on line "
                                            f"{joint_lines[names.index(name)]})")
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append(())
            joint_lines.append(number)
            pending = len(names) - 1
        elif keyword == "END":
            if not stack:
                raise MotionDataError(path, f"line {number}: End Site outside a joint")
            pending = -1
        elif opens:
            raise MotionDataError(path, f"line {number}: '{{' after {tokens[0]!r}")
        elif keyword == "{":
            if pending is None:
                raise MotionDataError(path, f"line {number}: '{{' without a ROOT, JOINT or End Site before it")
            stack.append(pending)
            pending = None
        elif keyword == "}":
            if not stack:
                raise MotionDataError(path, f"line {number}: '}}' closes nothing")
            stack.pop()
        elif keyword == "OFFSET":
            if not stack or len(tokens) != 4:
                raise MotionDataError(path, f"line {number}: OFFSET needs 3 numbers inside a joint block")
            if stack[-1] >= 0:
                offsets[stack[-1]] = [_number(path, number, t, "OFFSET") for t in tokens[1:]]
        elif keyword == "CHANNELS":
            if not stack or stack[-1] < 0:
                raise MotionDataError(path, f"line {number}: CHANNELS outside a joint block")
            declared = tokens[2:]
            if len(tokens) < 2 or not tokens[1].isdigit() or int(tokens[1]) != len(declared):
                raise MotionDataError(path, f"line {number}: CHANNELS count does not match the {len(declared)} channels named")
            bad = [c for c in declared if not _CHANNEL.match(c.capitalize())]
            if bad:
                raise MotionDataError(path, f"line {number}: unknown channel {bad[0]!r} (X/Y/Z position or rotation)")
            channels[stack[-1]] = tuple(c.capitalize() for c in declared)
        elif keyword == "MOTION":
            if stack or pending is not None or not names:
                raise MotionDataError(path, f"line {number}: MOTION before the hierarchy is complete "
                                            f"({'no joints' if not names else 'unclosed blocks'})")
            motion_line = number
            break
        else:
            raise MotionDataError(path, f"line {number}: unexpected {tokens[0]!r} in the hierarchy")
        if opens:
            stack.append(pending)
            pending = None
    if motion_line is None:
        where = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=1)  # the last line with text
        raise MotionDataError(path, f"line {where}: no MOTION section (the file ends "
                                    f"{'inside the hierarchy' if seen_hierarchy else 'before a HIERARCHY'})")
    n_frames, frame_time, first_frame_line = _motion_header(path, lines, motion_line)
    width = sum(len(c) for c in channels)
    if width == 0:
        raise MotionDataError(path, f"line {joint_lines[0]}: the hierarchy declares no CHANNELS, so frames hold no motion")
    frames = _frame_table(path, lines, first_frame_line, n_frames, width)
    return BvhClip(path, tuple(names), tuple(parents), np.asarray(offsets, dtype=np.float64), tuple(channels),
                   tuple(joint_lines), frame_time, frames)


def _motion_header(path: str, lines: list[str], motion_line: int) -> tuple[int, float, int]:
    """'Frames: N' and 'Frame Time: t' after MOTION -> (N, t, the 1-based line of frame 0)."""
    fields: dict[str, tuple[int, str]] = {}
    number = motion_line
    while len(fields) < 2:
        number += 1
        if number > len(lines):
            raise MotionDataError(path, f"line {len(lines)}: the MOTION section lacks 'Frames:' or 'Frame Time:'")
        raw = lines[number - 1].strip()
        if not raw:
            continue
        key, sep, value = raw.partition(":")
        key = key.strip().lower()
        if not sep or key not in ("frames", "frame time"):
            raise MotionDataError(path, f"line {number}: expected 'Frames: N' then 'Frame Time: t', found {raw[:40]!r}")
        fields[key] = (number, value.strip())
    frames_line, frames_text = fields["frames"]
    if not frames_text.isdigit() or int(frames_text) < 2:
        raise MotionDataError(path, f"line {frames_line}: 'Frames:' must be a whole number of at least 2, got {frames_text!r}")
    time_line, time_text = fields["frame time"]
    frame_time = _number(path, time_line, time_text, "Frame Time")
    if frame_time <= 0:
        raise MotionDataError(path, f"line {time_line}: Frame Time must be positive, got {time_text}")
    return int(frames_text), frame_time, number + 1


def _frame_table(path: str, lines: list[str], first_line: int, n_frames: int, width: int) -> np.ndarray:
    """The (n_frames, width) table of the frame lines from `first_line` (1-based), blank lines
    skipped. Values per line are counted on the raw bytes, so a short or long line is found
    (and named) without a Python loop over the frames."""
    body = "\n".join(lines[first_line - 1:])
    if not body.strip():
        raise MotionDataError(path, f"line {len(lines)}: no frame lines after the MOTION header")
    data = np.frombuffer(body.encode("utf-8"), dtype=np.uint8)
    blank = (data == 32) | (data == 9) | (data == 13) | (data == 10)
    starts = np.flatnonzero(~blank & np.concatenate([[True], blank[:-1]]))  # first byte of each value
    newlines = np.flatnonzero(data == 10)
    n_lines = len(newlines) + 1
    counts = np.bincount(np.searchsorted(newlines, starts), minlength=n_lines)  # values per physical line (0-based)
    frame_rows = np.flatnonzero(counts)  # body line index of every frame
    if len(frame_rows) < n_frames:
        raise MotionDataError(path, f"line {first_line + n_lines - 1}: the file ends after {len(frame_rows)} of the "
                                    f"{n_frames} frames that 'Frames:' declares")
    if len(frame_rows) > n_frames:
        raise MotionDataError(path, f"line {first_line + int(frame_rows[n_frames])}: more frame lines than the "
                                    f"{n_frames} that 'Frames:' declares")
    wrong = np.flatnonzero(counts[frame_rows] != width)
    if len(wrong):
        row = int(wrong[0])
        raise MotionDataError(path, f"line {first_line + int(frame_rows[row])}: frame {row} has "
                                    f"{int(counts[frame_rows[row]])} values, the hierarchy declares {width} channels")
    try:
        table = np.array(body.split(), dtype=np.float64).reshape(n_frames, width)
    except ValueError:
        for row, index in enumerate(frame_rows):  # error path only: find the offending line
            for token in lines[first_line - 1 + index].split():
                _number(path, first_line + int(index), token, f"a value of frame {row}")
        raise MotionDataError(path, f"line {first_line}: the frame values are not all numbers") from None
    bad = np.flatnonzero(~np.isfinite(table).all(axis=1))
    if len(bad):
        row = int(bad[0])
        column = int(np.flatnonzero(~np.isfinite(table[row]))[0])
        raise MotionDataError(path, f"line {first_line + int(frame_rows[row])}: frame {row} has a non-finite value "
                                    f"({table[row, column]}) in channel {column}")
    return table


def source_forward_kinematics(clip: BvhClip) -> tuple[torch.Tensor, torch.Tensor]:
    """World positions (N, J, 3) and rotations (N, J, 3, 3) of the file's joints, in its units and axes."""
    table = torch.as_tensor(clip.frames, dtype=torch.float64)
    n = len(table)
    local = torch.eye(3, dtype=torch.float64).repeat(n, len(clip.names), 1, 1)
    offsets = torch.as_tensor(clip.offsets, dtype=torch.float64).repeat(n, 1, 1)  # (N, J, 3)
    column = 0
    for joint, joint_channels in enumerate(clip.channels):
        for channel in joint_channels:
            axis = AXES[channel[0].lower()]
            values = table[:, column]
            column += 1
            if channel.endswith("position"):
                offsets[:, joint, axis] = values
            else:
                local[:, joint] = local[:, joint] @ rot.rotation_about_axis(axis, torch.deg2rad(values))
    return forward_kinematics(local, torch.zeros(n, 3, dtype=torch.float64), offsets, clip.parents)


def rest_positions(clip: BvhClip) -> torch.Tensor:
    """(J, 3) joint positions of the file's rest pose (every rotation the identity), its units and axes."""
    identity = torch.eye(3, dtype=torch.float64).repeat(len(clip.names), 1, 1)
    return forward_kinematics(identity, torch.zeros(3, dtype=torch.float64), clip.offsets, clip.parents)[0]
