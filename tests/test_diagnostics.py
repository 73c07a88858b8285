"""Diagnostics against direct formulas."""

import jax
import numpy as np
from _strategies import build

import linprobe_theory as lt


def test_orthogonal_drift_sees_only_the_s_perp_part():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    in_S = 0.7 * jax.random.normal(jax.random.key(0), (2, problem.m)) @ problem.Q_S.T
    assert float(lt.orthogonal_drift(problem, problem.B0 + in_S)) <= 1e-14
    P_perp = np.eye(problem.d) - np.asarray(problem.Q_S @ problem.Q_S.T)
    g = np.asarray(jax.random.normal(jax.random.key(1), (2, problem.d)))
    expected = np.linalg.norm(g @ P_perp)
    np.testing.assert_allclose(lt.orthogonal_drift(problem, problem.B0 + in_S + g), expected, rtol=1e-12)


def test_balancedness_drift_formula():
    rng = np.random.default_rng(0)
    v, v0 = rng.normal(size=3), rng.normal(size=3)
    B, B0 = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    expected = np.linalg.norm((np.outer(v, v) - B @ B.T) - (np.outer(v0, v0) - B0 @ B0.T))
    np.testing.assert_allclose(lt.balancedness_drift(v, B, v0, B0), expected, rtol=1e-12)
    assert float(lt.balancedness_drift(v0, B0, v0, B0)) == 0.0


def test_feature_distortion_matches_the_papers_measure():
    rng = np.random.default_rng(1)
    B_before, B_after, inputs = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), rng.normal(size=(10, 6))
    change = inputs @ (B_after - B_before).T  # n × k
    expected = np.mean([np.mean(row**2) for row in change])
    np.testing.assert_allclose(lt.feature_distortion(B_before, B_after, inputs), expected, rtol=1e-12)
    stacked = np.stack([B_after, B_before])
    np.testing.assert_allclose(lt.feature_distortion(B_before, stacked, inputs), [expected, 0.0], rtol=1e-12)
