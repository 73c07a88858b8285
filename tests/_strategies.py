"""Shared hypothesis strategies and problem builders for the tests.

Dimensions come from a small fixed set, because JAX compiles once per shape."""

import jax
import jax.numpy as jnp
from hypothesis import strategies as st

import linprobe_theory as lt

# (d, k, m, n): all satisfy 1 ≤ m < d − k, n ≥ m, k ≤ m and m + 2k ≤ d (so `coverage` works).
DIMS = [(12, 2, 4, 8), (16, 3, 6, 12)]

dims = st.sampled_from(DIMS)
seeds = st.integers(0, 2**31 - 1)
eps_values = st.sampled_from([0.0, 1e-3, 1e-2, 0.1, 0.5])
small_eps = st.sampled_from([0.0, 1e-3, 1e-2])
coverages = st.sampled_from([None, 0.6, 0.95])
head_kinds = st.sampled_from(["zero", "random", "phi"])
phis = st.floats(0.0, 2.0)


def build(dims, seed, eps=0.0, coverage=None, **spec_kwargs) -> lt.Problem:
    d, k, m, n = dims
    spec = lt.ProblemSpec(d=d, k=k, m=m, n=n, eps=eps, coverage=coverage, **spec_kwargs)
    return lt.make_problem(spec, key=jax.random.key(seed))


def make_head(problem, kind, seed, phi=0.5):
    key = jax.random.fold_in(jax.random.key(seed), 12345)
    if kind == "zero":
        return lt.zero_head(problem)
    if kind == "random":
        return lt.random_head(problem, key=key)
    return lt.head_with_alignment(problem, phi, key=key, orthogonal_norm=0.3)


def time_grid(t_final, num=40):
    """0 and `num − 1` log-spaced times up to t_final."""
    return jnp.concatenate([jnp.zeros(1), jnp.logspace(-4, 0, num - 1) * t_final])
