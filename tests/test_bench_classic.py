"""Classic text-to-motion metrics: known values of each statistic, and the protocol's shape."""
from __future__ import annotations

import numpy as np
import pytest

from vimogen_core.bench import classic


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_r_precision_is_perfect_for_identical_embeddings_and_chance_for_unrelated_ones():
    emb = unit_rows(32, 16, 0)
    np.testing.assert_allclose(classic.r_precision(emb, emb), [1.0, 1.0, 1.0])
    chance = np.mean([classic.r_precision(unit_rows(32, 16, s), unit_rows(32, 16, 100 + s)) for s in range(200)], axis=0)
    np.testing.assert_allclose(chance, [1 / 32, 2 / 32, 3 / 32], atol=0.01)


def test_frechet_distance_of_a_shift_is_its_squared_length():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    b = rng.normal(size=(20000, 4)) + [0.3, 0.0, -0.4, 0.0]
    assert classic.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert classic.frechet_distance(a, b) == pytest.approx(0.25, abs=0.01)
    # Different spread: trace term (sigma_a - sigma_b)^2 per dimension = 4 x (1 - 2)^2.
    assert classic.frechet_distance(a, 2 * rng.normal(size=(20000, 4))) == pytest.approx(4.0, rel=0.03)


def test_diversity_and_multimodality_measure_spread():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(5000, 8))
    # E|x - y| for x, y ~ N(0, I_8) = 2 Gamma(4.5) / Gamma(4) (chi with 8 dof, scaled by sqrt 2).
    assert classic.diversity(spread, rng, pairs=20000) == pytest.approx(3.8446, rel=0.02)
    tight = [rng.normal(scale=0.01, size=(5, 8)) + rng.normal(size=8) for _ in range(50)]
    wide = [rng.normal(scale=1.0, size=(5, 8)) for _ in range(50)]
    assert classic.multimodality(tight, rng) < 0.05 < classic.multimodality(wide, rng)


def test_protocol_reports_20_repetition_intervals_and_rewards_matching_generations():
    texts = unit_rows(96, 32, 1)
    good = texts + 0.05 * unit_rows(96, 32, 2)  # generations close to their texts
    bad = unit_rows(96, 32, 3)  # generations unrelated to their texts
    real = texts + 0.05 * unit_rows(96, 32, 4)
    groups = [good[i : i + 4] for i in range(0, 40, 4)]
    scored_good = classic.classic_metrics_from_embeddings(texts, real, good, groups)
    scored_bad = classic.classic_metrics_from_embeddings(texts, real, bad)
    assert set(scored_good) == {"R_precision_top1", "R_precision_top2", "R_precision_top3", "MM_Dist", "FID",
                                "Diversity", "MultiModality"}
    assert scored_good["R_precision_top1"].mean > 0.95 and scored_bad["R_precision_top1"].mean < 0.2
    assert scored_good["R_precision_top1"].mean <= scored_good["R_precision_top3"].mean
    assert scored_good["MM_Dist"].mean < scored_bad["MM_Dist"].mean
    assert scored_good["FID"].mean < scored_bad["FID"].mean
    assert all(interval.ci95 >= 0 for interval in scored_good.values())
    assert scored_bad["R_precision_top1"].ci95 > 0  # reshuffled batches differ between repetitions
    with pytest.raises(ValueError, match="full batch of 32"):
        classic.classic_metrics_from_embeddings(texts[:20], real, good[:20])
