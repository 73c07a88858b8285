"""Linear probing's limit: the head that LP gradient flow converges to, in closed form where one
exists.

With the features frozen at `B0`, LP is regression of the targets on the fixed features
`A = σ(X B0ᵀ)` (`n × k`; `A = X B0ᵀ` in the paper). For the squared loss it is convex with the
closed-form limit

    v_lp = H⁺ Aᵀ y + (I − H⁺ H) v0,    H = AᵀA + μ_v I,

`μ_v` the head's ridge weight (`WeightDecay(μ, on="both")`; 0 otherwise, since a penalty on B
alone is constant while B is frozen): the least-squares head `A⁺y + (I − A⁺A) v0` at `μ_v = 0`,
ridge regression `(AᵀA + μ_v I)⁻¹ Aᵀ y` above. The logistic loss has no closed form (and on
separable data no finite limit): its LP head is the LP flow's state where the solve stopped.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from .flows import make_flow
from .linalg import pinv, pinv_hermitian
from .objectives import L2SP, WeightDecay, is_squared
from .problem import Problem, validate_head


def lp_features(problem: Problem, model) -> Float[Array, "n k"]:
    """`A = σ(X B0ᵀ)`: the frozen features LP regresses on."""
    return model.activation(model.pre_activations(problem.B0, problem.X))


def has_closed_form(flow) -> bool:
    """True when LP's limit is the closed form above: the squared loss, and only the built-in
    regularisers (a custom one may penalise the head in a way the closed form does not know)."""
    return is_squared(flow.loss) and all(type(r) in (WeightDecay, L2SP) for r in flow.regularizers)


def head_ridge(flow):
    """`μ_v`: the sum of the regularisers' weights on `‖v‖²`."""
    return sum((r.head_ridge() for r in flow.regularizers), jnp.asarray(0.0))


def lp_limit(problem: Problem, v0, flow) -> Float[Array, " k"]:
    """LP's limit for `flow` (squared loss; see the module docstring).

    The paper's case (linear model, no head penalty) takes the pseudo-inverse of `A` itself,
    not of `AᵀA`, which would square its condition number."""
    if not has_closed_form(flow):
        raise ValueError(
            f"LP with loss={flow.loss.name!r} and regularizers "
            f"{[type(r).__name__ for r in flow.regularizers]} has no closed-form limit; run the LP flow"
        )
    A = lp_features(problem, flow.model)
    if not any(r.penalises_head for r in flow.regularizers):
        A_pinv = pinv(A)
        return A_pinv @ problem.y + v0 - A_pinv @ (A @ v0)
    H = A.T @ A + head_ridge(flow) * jnp.eye(problem.k)
    H_pinv = pinv_hermitian(H)
    return H_pinv @ (A.T @ problem.y) + v0 - H_pinv @ (H @ v0)


def linear_probe_solution(problem: Problem, v0=None) -> Float[Array, " k"]:
    """The limit of LP gradient flow: `v_lp = A⁺ y + (I − A⁺ A) v0`, `A = X B0ᵀ`.

    With `A` of full column rank this is the least-squares head `(AᵀA)⁻¹ Aᵀ y`, whatever `v0`.
    """
    v0 = jnp.zeros((problem.k,)) if v0 is None else validate_head(problem, v0)
    return lp_limit(problem, v0, make_flow())
