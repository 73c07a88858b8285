"""Diagnostics of a fine-tuning run: S⊥ drift, balancedness, and feature distortion."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from .problem import Problem


def orthogonal_drift(problem: Problem, B: Float[Array, "... k d"], scale=1.0) -> Float[Array, ...]:
    r"""$\|(B - s B_0) P_{S^\perp}\|_F$: how much features of inputs orthogonal to the ID subspace moved
    (`s = scale`, broadcast over the leading axes of `B`: the exact S⊥ scale a weight decay
    imposes, `objectives.perp_scale`; 1 otherwise).

    The paper's invariance: every row of `∇_B L̂` lies in S, so this is exactly 0 along FT and
    LP-FT gradient flow (and gradient descent with any step).
    """
    delta = B - jnp.asarray(scale)[..., None, None] * problem.B0
    perp = delta - (delta @ problem.Q_S) @ problem.Q_S.T
    return jnp.sqrt(jnp.sum(perp * perp, axis=(-2, -1)))


def balancedness_drift(v, B, v0, B0) -> Float[Array, ...]:
    r"""$\|(v v^\top - B B^\top) - (v_0 v_0^\top - B_0 B_0^\top)\|_F$.

    Two-layer linear gradient flow conserves `v vᵀ − B Bᵀ`, so this is 0 up to integration error.
    """

    def invariant(v, B):
        return v[..., :, None] * v[..., None, :] - B @ jnp.swapaxes(B, -1, -2)

    diff = invariant(v, B) - invariant(v0, B0)
    return jnp.sqrt(jnp.sum(diff * diff, axis=(-2, -1)))


def feature_distortion(
    B_before: Float[Array, "k d"], B_after: Float[Array, "... k d"], inputs: Float[Array, "n d"]
) -> Float[Array, ...]:
    r"""Mean over examples of the mean squared per-coordinate feature change,
    $\frac{1}{n}\sum_i \frac{1}{k}\|(B_{after} - B_{before})\, x_i\|^2$ — the measure the paper reports for
    ResNet features on Living-17 (ID vs OOD examples)."""
    change = jnp.einsum("...kd,nd->...nk", B_after - B_before, inputs)
    return jnp.mean(change * change, axis=(-2, -1))
