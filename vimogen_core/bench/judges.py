"""Judges for the two text-conditioned MBench dimensions.

- Motion_Condition_Consistency: `choose(motion, candidates) -> index` (10-way choice).
- Motion_Generalizability: `matches(motion, text) -> bool` (yes/no).

`LocalJudge` (the offline default) is the contrastive text-motion evaluator: argmax of cosine
similarity over the candidates, and "yes" when the similarity clears a threshold calibrated on
held-out matched vs mismatched pairs (the threshold that maximises balanced accuracy). The
video-language-model judge lives in `vimogen_core.bench.vlm`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vimogen_core.bench.evaluator import (
    CaptionedMotion,
    EvaluatorConfig,
    TextMotionEvaluator,
    minilm_sentence_embeddings,
    train_evaluator,
)
from vimogen_core.errors import MotionDataError
from vimogen_core.files import atomic_write_json
from vimogen_core.motion.representation import features_to_joints
from vimogen_core.state import state_dir

JUDGE_FILE = "judge.json"
BUILTIN_MIN_FRAMES = 160  # loop/pad the short built-in clips so training windows vary


class Judge(Protocol):
    name: str

    def choose(self, motion: np.ndarray, candidates: Sequence[str]) -> int: ...

    def matches(self, motion: np.ndarray, text: str) -> bool: ...


@dataclass(frozen=True)
class Calibration:
    """Held-out evidence for a LocalJudge: its yes-threshold and how well it separates pairs."""

    threshold: float
    balanced_accuracy: float
    matched_pairs: int
    mismatched_pairs: int
    ten_way_accuracy: float
    ten_way_trials: int
    heldout: str  # what was held out, in words


def calibrate_threshold(matched: np.ndarray, mismatched: np.ndarray) -> tuple[float, float]:
    """The similarity threshold maximising balanced accuracy of `sim >= threshold` (and that accuracy).

    Candidates are midpoints between consecutive distinct scores, so the threshold never sits on a
    training point; ties in accuracy take the middle candidate of the best plateau.
    """
    matched, mismatched = np.asarray(matched, float), np.asarray(mismatched, float)
    if not len(matched) or not len(mismatched):
        raise ValueError("calibration needs matched and mismatched pairs")
    scores = np.unique(np.concatenate([matched, mismatched]))
    candidates = np.concatenate([[scores[0] - 1e-6], (scores[1:] + scores[:-1]) / 2, [scores[-1] + 1e-6]])
    true_positive = (matched[None, :] >= candidates[:, None]).mean(1)
    true_negative = (mismatched[None, :] < candidates[:, None]).mean(1)
    balanced = (true_positive + true_negative) / 2
    best = np.flatnonzero(balanced == balanced.max())
    return float(candidates[best[len(best) // 2]]), float(balanced.max())


def ten_way_accuracy(similarity: np.ndarray, distinct: np.ndarray | None = None, trials_per_motion: int = 20,
                     seed: int = 0) -> tuple[float, int]:
    """similarity (N, N): motion i vs caption j, true pairs on the diagonal. Each trial puts the true
    caption among 9 random other captions (only those `distinct` (N, N) from it, e.g. not the same
    sentence); returns (accuracy, number of trials)."""
    n = len(similarity)
    distinct = ~np.eye(n, dtype=bool) if distinct is None else distinct & ~np.eye(n, dtype=bool)
    rng = np.random.default_rng(seed)
    correct = []
    for i in range(n):
        others = np.flatnonzero(distinct[i])
        if len(others) < 9:
            continue
        for _ in range(trials_per_motion):
            options = np.concatenate([[i], rng.choice(others, size=9, replace=False)])
            correct.append(int(np.argmax(similarity[i, options]) == 0))
    if not correct:
        raise ValueError(f"10-way accuracy needs motions with at least 9 distinct other captions (got {n} motions)")
    return float(np.mean(correct)), len(correct)


class LocalJudge:
    """Contrastive text-motion judge with a calibrated yes-threshold."""

    def __init__(self, evaluator: TextMotionEvaluator, calibration: Calibration):
        self.evaluator = evaluator
        self.calibration = calibration

    @property
    def name(self) -> str:
        return f"local-contrastive (MiniLM text, threshold {self.calibration.threshold:.3f} calibrated on {self.calibration.heldout})"

    def choose(self, motion: np.ndarray, candidates: Sequence[str]) -> int:
        return int(np.argmax(self.evaluator.similarity([motion], list(candidates))[0]))

    def matches(self, motion: np.ndarray, text: str) -> bool:
        return bool(self.evaluator.similarity([motion], [text])[0, 0] >= self.calibration.threshold)

    def choose_many(self, motions: Sequence[np.ndarray], candidate_lists: Sequence[Sequence[str]]) -> list[int]:
        motion_emb = self.evaluator.encode_motions(list(motions))
        texts = sorted({t for c in candidate_lists for t in c})
        text_emb = dict(zip(texts, self.evaluator.encode_texts(texts), strict=True))
        return [int(np.argmax([m @ text_emb[t] for t in c])) for m, c in zip(motion_emb, candidate_lists, strict=True)]

    def matches_many(self, motions: Sequence[np.ndarray], texts: Sequence[str]) -> list[bool]:
        sim = np.einsum("ne,ne->n", self.evaluator.encode_motions(list(motions)), self.evaluator.encode_texts(list(texts)))
        return [bool(s >= self.calibration.threshold) for s in sim]

    def save(self, directory: str | Path) -> Path:
        directory = Path(self.evaluator.save(directory))
        atomic_write_json(directory / JUDGE_FILE, {"calibration": asdict(self.calibration)}, indent=2)
        return directory

    @classmethod
    def load(cls, directory: str | Path, text_embedder=minilm_sentence_embeddings) -> LocalJudge:
        directory = Path(directory)
        evaluator = TextMotionEvaluator.load(directory, text_embedder)
        try:
            calibration = Calibration(**json.loads((directory / JUDGE_FILE).read_text())["calibration"])
        except FileNotFoundError:
            raise MotionDataError(directory, f"{JUDGE_FILE} missing: not a LocalJudge directory") from None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise MotionDataError(directory / JUDGE_FILE, f"bad judge file ({err})") from None
        return cls(evaluator, calibration)


def builtin_judge_data() -> tuple[list[CaptionedMotion], list[CaptionedMotion]]:
    """Training and held-out samples from the 15 built-in motion-capture clips.

    Held out: each clip's last short caption (never trained on), paired with the clip itself at
    its original length. Training: the lengthened clip with the other captions and the
    video-style description.
    """
    from vimogen_core.sources.deepmimic import load_builtin_clip, builtin_clip_names

    train, heldout = [], []
    for name in builtin_clip_names():
        clip = load_builtin_clip(name)
        long_clip = load_builtin_clip(name, min_frames=BUILTIN_MIN_FRAMES)
        train.append(CaptionedMotion(name, long_clip.motion.joints.numpy(), clip.captions[:-1] + [clip.video_caption]))
        heldout.append(CaptionedMotion(name, clip.motion.joints.numpy(), clip.captions[-1:]))
    return train, heldout


def shard_judge_data(manifest_path: str | Path, heldout_split: str = "test",
                     max_heldout: int = 500) -> tuple[list[CaptionedMotion], list[CaptionedMotion]]:
    """Training samples (train split, all captions) and held-out samples (one caption each) from a
    curated shard set (its Parquet manifest)."""
    from vimogen_core.curation.shard_reader import iter_shard_samples

    train, heldout = [], []
    for row, features in iter_shard_samples(Path(manifest_path)):
        joints = features_to_joints(features)
        captions = [c for c in row["motion_text"] if c] + ([row["video_text"]] if row.get("video_text") else [])
        if not captions or len(joints) < 2:
            continue
        if row["split"] == "train":
            train.append(CaptionedMotion(row["id"], joints, captions))
        elif row["split"] == heldout_split and len(heldout) < max_heldout:
            heldout.append(CaptionedMotion(row["id"], joints, captions[:1]))
    if len(train) < 2 or len(heldout) < 10:
        raise MotionDataError(manifest_path, f"too few captioned samples for a judge ({len(train)} train, {len(heldout)} {heldout_split})")
    return train, heldout


def calibrate(evaluator: TextMotionEvaluator, heldout: Sequence[CaptionedMotion], heldout_description: str,
              seed: int = 0) -> Calibration:
    """Threshold and 10-way accuracy from held-out samples (one caption each). Pairs of samples that
    share the very same caption are neither mismatched pairs nor distractors."""
    captions = [s.captions[0] for s in heldout]
    similarity = evaluator.similarity([s.joints for s in heldout], captions)  # (N, N)
    distinct = np.array([[a != b for b in captions] for a in captions])
    threshold, balanced = calibrate_threshold(np.diag(similarity), similarity[distinct])
    accuracy, trials = ten_way_accuracy(similarity, distinct, seed=seed)
    return Calibration(threshold, balanced, len(heldout), int(distinct.sum()), accuracy, trials, heldout_description)


def train_local_judge(train: Sequence[CaptionedMotion] | None = None, heldout: Sequence[CaptionedMotion] | None = None,
                      config: EvaluatorConfig = EvaluatorConfig(), text_embedder=minilm_sentence_embeddings,
                      heldout_description: str | None = None, manifest_path: str | Path | None = None,
                      sink=None) -> LocalJudge:
    """Train the contrastive evaluator and calibrate the judge: on the given samples, on a curated
    shard set (`manifest_path`), or on the built-in clips (default)."""
    if train is None and manifest_path is not None:
        train, heldout = shard_judge_data(manifest_path)
        heldout_description = heldout_description or f"{len(heldout)} test-split samples of {Path(manifest_path).parent.name}"
    if train is None:
        train, heldout = builtin_judge_data()
        heldout_description = heldout_description or "15 built-in mocap clips x 1 unseen caption each"
    if not heldout:
        raise ValueError("a LocalJudge needs held-out samples to calibrate its threshold")
    evaluator = train_evaluator(train, config, text_embedder, sink)
    calibration = calibrate(evaluator, heldout, heldout_description or f"{len(heldout)} held-out samples", config.seed)
    evaluator.info |= {"ten_way_accuracy": calibration.ten_way_accuracy}
    return LocalJudge(evaluator, calibration)


def default_judge_dir() -> Path:
    return state_dir() / "bench" / "local_judge"


def load_or_train_local_judge(directory: str | Path | None = None, sink=None) -> LocalJudge:
    """The saved default judge, trained on the built-in clips (and saved) the first time."""
    directory = Path(directory) if directory is not None else default_judge_dir()
    if (directory / JUDGE_FILE).exists():
        return LocalJudge.load(directory)
    judge = train_local_judge(sink=sink)
    judge.save(directory)
    return judge
