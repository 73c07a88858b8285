"""Problems built in their smallest faithful dimension: the cost of a sweep without its `d`.

Every quantity this toolkit computes from a problem — the reduced coordinates, the losses, φ,
coverage, the bounds, the flows, OOD risks on Gaussian inputs — is invariant under an isometric
embedding `x ↦ U x` (`UᵀU = I`) applied to the inputs, features and Σ together: it depends on
the data only through inner products (under Σ) among the rows of X, B0 and B⋆, which an isometry
keeps. The constructed problems live in the span of S and at most `2k` more directions, and their
Σ is `a P_S + b P_{S⊥}`, so a problem in `R^d` is an embedding of one in `R^{m + 2k}`:

- With `coverage` set, `make_problem` draws every random quantity except the frame in that
  frame's coordinates, so `make_compact_problem(spec, key=key)` is, for the same key, the same
  problem as `make_problem(spec, key=key)` up to the embedding: its reduced quantities, losses,
  φ, coverage, bounds and flows agree to round-off. What is *sampled in* `R^d` afterwards
  (`ood.ood_inputs` and the sampled risks, `normal(key, (N, d))`) agrees in law only, and
  `problem.d` and the shapes of `d`-sized outputs differ.
- With `coverage=None`, B⋆ and B0 come from a Haar frame `F` of `2k` columns in `R^d`, whose
  overlap with S depends on `d`. What the problem sees of `F` is its S-part `T = P_S F` and the
  Gram matrix `F_⊥ᵀF_⊥ = I − TᵀT` of the rest. Writing `F = G (GᵀG)^{−1/2}` for a Gaussian
  `G = [G_S; G_⊥]`, `GᵀG = G_SᵀG_S + W` with `W = G_⊥ᵀG_⊥ ~ Wishart_{2k}(d − m, I)`, sampled by
  Bartlett's decomposition `W = A Aᵀ` (`A_ii² ~ χ²_{d−m−i+1}`, `A_ij ~ N(0, 1)` below the
  diagonal), so `T = G_S M^{−1/2}` and the S⊥ part `L = Aᵀ M^{−1/2}` (`LᵀL = I − TᵀT`),
  `M = GᵀG`. `[T; L]` is a frame in `R^{m + 2k}` with the same law as the relevant part of `F`:
  the compact problem then has the same law as the `d`-dimensional one (not the same draw).

Either way no `d`-sized array is formed, so a sweep at `d = 10⁶` costs what it costs at
`d = m + 2k`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .construction import (
    ProblemSpec,
    assemble_problem,
    features_from_frame,
    make_problem,
    numeric_parameters,
    rotation_cos_sin,
)
from .linalg import symmetric_eigh
from .problem import Problem


def compact_dimension(spec: ProblemSpec) -> int:
    """`m + 2k`: the dimension every problem of `spec` embeds from (or `d` if that is smaller)."""
    return min(spec.d, spec.m + 2 * spec.k)


def make_compact_problem(spec: ProblemSpec, *, key: PRNGKeyArray, **overrides) -> Problem:
    """A problem of `spec` built in `R^{compact_dimension(spec)}`, its S the first `m` axes
    for `coverage=None` (module docstring): the same problem as `make_problem(spec, key=key)`
    up to an isometric embedding when `spec.coverage` is set, the same law otherwise."""
    small = dataclasses.replace(spec, d=compact_dimension(spec))
    if spec.coverage is not None or small.d == spec.d:
        return make_problem(small, key=key, **overrides)
    p = numeric_parameters(spec, overrides)
    _, k_star, k_v, k_x, k_noise, _ = jax.random.split(key, 6)
    frame = haar_frame_in_compact_form(k_star, d=spec.d, m=spec.m, p=2 * spec.k)
    B_star, B0 = features_from_frame(frame, spec.k, *rotation_cos_sin(p["eps"]))
    Q_S = jnp.eye(small.d, spec.m)
    return assemble_problem(small, p, (k_v, k_x, k_noise), Q_S, B_star, B0)


def haar_frame_in_compact_form(key: PRNGKeyArray, *, d: int, m: int, p: int) -> Float[Array, "m+p p"]:
    """`[T; L]`: the S-part `T` (first `m` rows) of a Haar `d × p` frame, S the first `m` axes
    of `R^d`, and `L` (`p × p`) with `LᵀL` the Gram matrix of its S⊥ part; needs `d − m ≥ p`."""
    if d - m < p:
        raise ValueError(f"a compact Haar frame needs d − m ≥ p, got d={d}, m={m}, p={p}")
    k_g, k_chi, k_low = jax.random.split(key, 3)
    G_S = jax.random.normal(k_g, (m, p))
    # Bartlett: A lower triangular, A_ii² ~ χ²_{d−m−i+1} (i = 1..p), N(0, 1) below the diagonal.
    dof = (d - m) - jnp.arange(p)
    diag = jnp.sqrt(2.0 * jax.random.gamma(k_chi, dof / 2.0))
    A = jnp.tril(jax.random.normal(k_low, (p, p)), -1) + jnp.diag(diag)
    M = G_S.T @ G_S + A @ A.T
    lam, V = symmetric_eigh(M)
    M_inv_sqrt = (V / jnp.sqrt(lam)) @ V.T
    return jnp.concatenate([G_S @ M_inv_sqrt, A.T @ M_inv_sqrt], axis=0)
