"""Classic text-to-motion metrics (HumanML3D protocol) in the contrastive evaluator's embedding space.

R-precision top-1/2/3 and MM-Dist over batches of 32 (text, generated motion) pairs, FID between
real and generated motion embeddings, Diversity (mean distance of random generated pairs) and
MultiModality (mean distance between generations of the same text). Each metric is computed
`repetitions` times (20) and reported as mean and 95% interval half-width (1.96 std / sqrt(n)).
A repetition reshuffles the batches and bootstrap-resamples the generated set (the protocol
regenerates instead; pass a fresh set per call to do that), so intervals reflect sampling noise.
Distances are Euclidean between the evaluator's unit-norm embeddings.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BATCH_SIZE = 32
REPETITIONS = 20
DIVERSITY_PAIRS = 300
MULTIMODALITY_PAIRS = 10


@dataclass(frozen=True)
class Interval:
    mean: float
    ci95: float

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.ci95}


def _interval(values: Sequence[float]) -> Interval:
    values = np.asarray(values, dtype=np.float64)
    return Interval(float(values.mean()), float(1.96 * values.std() / np.sqrt(len(values))))


def pairwise_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, E), (M, E) -> (N, M) Euclidean distances."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def r_precision(text_emb: np.ndarray, motion_emb: np.ndarray, top_k: int = 3) -> np.ndarray:
    """Matched rows (N, E) of one batch -> (top_k,) fraction of texts whose motion ranks within k."""
    distance = pairwise_distance(text_emb, motion_emb)  # (N, N)
    rank = (distance < np.diag(distance)[:, None]).sum(1)  # motions strictly closer than the true one
    return np.array([(rank < k).mean() for k in range(1, top_k + 1)])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of a and b.

    tr sqrt(Ca Cb) = tr sqrt(Ca^1/2 Cb Ca^1/2), a symmetric PSD matrix: its eigenvalues give the
    trace directly (and far faster than a general matrix square root).
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(inner, 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def diversity(motion_emb: np.ndarray, rng: np.random.Generator, pairs: int = DIVERSITY_PAIRS) -> float:
    first = rng.integers(0, len(motion_emb), size=pairs)
    second = rng.integers(0, len(motion_emb), size=pairs)
    return float(np.linalg.norm(motion_emb[first] - motion_emb[second], axis=1).mean())


def multimodality(groups: Sequence[np.ndarray], rng: np.random.Generator, pairs: int = MULTIMODALITY_PAIRS) -> float:
    """groups: per text, (G, E) embeddings of its generations (G >= 2)."""
    distances = []
    for group in groups:
        first = rng.integers(0, len(group), size=pairs)
        second = (first + rng.integers(1, len(group), size=pairs)) % len(group)  # never the same motion
        distances.append(np.linalg.norm(group[first] - group[second], axis=1).mean())
    return float(np.mean(distances))


def classic_metrics_from_embeddings(text_emb: np.ndarray, real_emb: np.ndarray, generated_emb: np.ndarray,
                                    multimodal_groups: Sequence[np.ndarray] | None = None,
                                    repetitions: int = REPETITIONS, batch_size: int = BATCH_SIZE,
                                    seed: int = 0) -> dict[str, Interval]:
    """text_emb[i] describes generated_emb[i]; real_emb are reference motions (any count)."""
    n = len(text_emb)
    if len(generated_emb) != n:
        raise ValueError("each text needs exactly one generated motion")
    if n < batch_size:
        raise ValueError(f"R-precision needs at least one full batch of {batch_size} pairs, got {n}")
    rng = np.random.default_rng(seed)
    results: dict[str, list[float]] = {k: [] for k in ("R_precision_top1", "R_precision_top2", "R_precision_top3",
                                                       "MM_Dist", "FID", "Diversity")}
    if multimodal_groups:
        results["MultiModality"] = []
    for _ in range(repetitions):
        order = rng.permutation(n)[: n - n % batch_size].reshape(-1, batch_size)
        precision = np.mean([r_precision(text_emb[b], generated_emb[b]) for b in order], axis=0)
        for k in range(3):
            results[f"R_precision_top{k + 1}"].append(float(precision[k]))
        matched = np.linalg.norm(text_emb[order.ravel()] - generated_emb[order.ravel()], axis=1)
        results["MM_Dist"].append(float(matched.mean()))
        resampled = generated_emb[rng.integers(0, n, size=n)]
        results["FID"].append(frechet_distance(real_emb, resampled))
        results["Diversity"].append(diversity(resampled, rng, min(DIVERSITY_PAIRS, n)))
        if multimodal_groups:
            results["MultiModality"].append(multimodality(multimodal_groups, rng))
    return {name: _interval(values) for name, values in results.items()}


def classic_metrics(evaluator, texts: Sequence[str], real_motions: Sequence[np.ndarray],
                    generated_motions: Sequence[np.ndarray],
                    multimodal_generations: Sequence[Sequence[np.ndarray]] | None = None,
                    repetitions: int = REPETITIONS, batch_size: int = BATCH_SIZE, seed: int = 0) -> dict:
    """The classic metrics with `evaluator` (a TextMotionEvaluator); JSON-ready, names the evaluator.

    Also scores the real motions against the same texts when they are paired (equal counts), the
    "ground truth" row every text-to-motion table shows.
    """
    text_emb = evaluator.encode_texts(list(texts))
    real_emb = evaluator.encode_motions(list(real_motions))
    generated_emb = evaluator.encode_motions(list(generated_motions))
    groups = [evaluator.encode_motions(list(g)) for g in multimodal_generations or [] if len(g) >= 2]
    out = {
        "evaluator": getattr(evaluator, "name", type(evaluator).__name__),
        "repetitions": repetitions,
        "batch_size": batch_size,
        "generated": {k: v.as_dict() for k, v in classic_metrics_from_embeddings(
            text_emb, real_emb, generated_emb, groups, repetitions, batch_size, seed).items()},
    }
    if len(real_emb) == len(text_emb):
        out["real"] = {k: v.as_dict() for k, v in classic_metrics_from_embeddings(
            text_emb, real_emb, real_emb, None, repetitions, batch_size, seed).items()}
    return out
