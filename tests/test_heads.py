"""Initial heads: φ-prescribed heads hit φ exactly; random heads are reproducible."""

import jax
import numpy as np
from _strategies import build, coverages, dims, eps_values, seeds
from hypothesis import given
from hypothesis import strategies as st

import linprobe_theory as lt


@given(
    dims=dims,
    seed=seeds,
    eps=eps_values,
    coverage=coverages,
    phi=st.floats(0.0, 3.0),
    orthogonal_norm=st.sampled_from([0.0, 0.5, 2.0]),
    v_star_norm=st.sampled_from([0.5, 1.0, 1.7]),
)
def test_head_with_alignment_has_the_requested_phi(
    dims, seed, eps, coverage, phi, orthogonal_norm, v_star_norm
):
    """Both branches: φ ≤ ‖v⋆‖² (under-scaled head) and φ > ‖v⋆‖² (over-scaled)."""
    problem = build(dims, seed, eps, coverage, v_star_norm=v_star_norm)
    v0 = lt.head_with_alignment(problem, phi, key=jax.random.key(seed), orthogonal_norm=orthogonal_norm)
    np.testing.assert_allclose(float(lt.head_alignment_error(problem, v0)), phi, rtol=1e-8, atol=1e-6)
    vs = lt.aligned_v_star(problem)
    orth = v0 - (v0 @ vs) / (vs @ vs) * vs
    np.testing.assert_allclose(float(np.linalg.norm(orth)), orthogonal_norm, atol=1e-9)


def test_head_with_alignment_endpoints():
    problem = build((16, 3, 6, 12), seed=0, eps=0.1)
    np.testing.assert_allclose(lt.head_with_alignment(problem, 1.0), 0.0, atol=1e-12)  # ‖v⋆‖² = 1
    np.testing.assert_allclose(lt.head_with_alignment(problem, 0.0), lt.aligned_v_star(problem), atol=1e-12)


def test_random_head_is_reproducible_and_scaled():
    problem = build((16, 3, 6, 12), seed=0)
    a = lt.random_head(problem, key=jax.random.key(3))
    np.testing.assert_array_equal(a, lt.random_head(problem, key=jax.random.key(3)))
    heads = jax.vmap(lambda k: lt.random_head(problem, key=k))(jax.random.split(jax.random.key(0), 4000))
    np.testing.assert_allclose(np.mean(np.sum(heads**2, axis=1)), 1.0, rtol=0.05)  # E‖v0‖² = ‖v⋆‖²
    np.testing.assert_array_equal(lt.zero_head(problem), np.zeros(3))
