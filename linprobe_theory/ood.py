"""OOD risk of the two-layer model `f(x) = vᵀ σ(B x)` against its teacher `f⋆(x) = v⋆ᵀ σ⋆(B⋆ x)`.

For the linear model the OOD loss has the closed form `(Bᵀv − w⋆)ᵀ Σ (Bᵀv − w⋆)`
(`losses.ood_loss`); a nonlinear model's risk `E[(f(x) − f⋆(x))²]` over OOD inputs is estimated
on a fixed sample `x ~ N(0, Σ)` (`ood_inputs`, size and key explicit). For Gaussian inputs and
σ, σ⋆ ∈ {identity, ReLU} the risk has an exact form (`gaussian_ood_risk`), through the
expectations, with `a, b ∈ R^d` and `K = aᵀΣb`, `‖a‖ = √(aᵀΣa)`, `cos θ = K/(‖a‖ ‖b‖)`:

    E[aᵀx · bᵀx]             = K
    E[relu(aᵀx) · bᵀx]       = K / 2
    E[relu(aᵀx) relu(bᵀx)]   = ‖a‖ ‖b‖ (sin θ + (π − θ) cos θ) / (2π)   (the arc-cosine kernel)

The logistic model is judged by its OOD 0–1 error `P(sign f(x) ≠ sign f⋆(x))` and OOD logistic
loss `E[log(1 + exp(−sign(f⋆(x)) f(x)))]`, both on samples. ID risks are the same estimates on
draws from the ID law `N(0, P_S)` (`id_inputs`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .models import ACTIVATIONS, make_model
from .problem import Problem

CLOSED_FORM_ACTIVATIONS = ("identity", "relu")


def ood_inputs(problem: Problem, key, num: int) -> Float[Array, "num d"]:
    """`num` draws of `x ~ N(0, Σ)`, with `Σ^{1/2} = √c (I − W Wᵀ) + W diag(√(c + λ)) Wᵀ` for the
    factored `Σ = c I + W diag(λ) Wᵀ` (W orthonormal)."""
    g = jax.random.normal(key, (num, problem.d))
    W, c, lam = problem.ood.basis, problem.ood.scale, problem.ood.spectrum
    gw = g @ W
    return jnp.sqrt(c) * (g - gw @ W.T) + (gw * jnp.sqrt(c + lam)) @ W.T


def id_inputs(problem: Problem, key, num: int, scale=1.0) -> Float[Array, "num d"]:
    """`num` draws of `x = scale · Q_S g`, `g ~ N(0, I_m)`: the ID law `N(0, scale² P_S)` (the
    training inputs' law for `scale = input_scale`); with `scale = 1` the law behind
    `losses.id_loss`, whose `‖P_S e‖² = E[(eᵀx)²]` for a linear predictor error `e`."""
    return scale * jax.random.normal(key, (num, problem.Q_S.shape[1])) @ problem.Q_S.T


def _outputs(problem: Problem, v, B, inputs, activation):
    """`(f(x), f⋆(x))` for each row of `inputs` (one `(v, B)`)."""
    return make_model(activation)(v, B, inputs), problem.teacher_outputs(inputs)


def _per_state(fn):
    """Map `fn(v, B)` over leading axes of `(v, B)`, e.g. the times of a trajectory."""

    def mapped(v, B):
        if v.ndim == 1:
            return fn(v, B)
        return jax.vmap(mapped)(v, B)

    return mapped


def sampled_ood_risk(problem: Problem, v, B, *, inputs, activation="identity") -> Float[Array, ...]:
    """`(1/N) Σ_x (f(x) − f⋆(x))²` over the rows of `inputs` (leading axes of `(v, B)` map)."""

    def one(v, B):
        f, f_star = _outputs(problem, v, B, inputs, activation)
        return jnp.mean((f - f_star) ** 2)

    return _per_state(one)(v, B)


def ood_zero_one_error(problem: Problem, v, B, *, inputs, activation="identity") -> Float[Array, ...]:
    """`(1/N) Σ_x 1[sign f(x) ≠ sign f⋆(x)]` over the rows of `inputs`."""

    def one(v, B):
        f, f_star = _outputs(problem, v, B, inputs, activation)
        wrong = jnp.sign(f) != jnp.sign(f_star)
        return jnp.sum(wrong) / wrong.size  # an exact count over N, in float64

    return _per_state(one)(v, B)


def ood_logistic_loss(problem: Problem, v, B, *, inputs, activation="identity") -> Float[Array, ...]:
    """`(1/N) Σ_x log(1 + exp(−sign(f⋆(x)) f(x)))` over the rows of `inputs`."""

    def one(v, B):
        f, f_star = _outputs(problem, v, B, inputs, activation)
        return jnp.mean(jax.nn.softplus(-jnp.sign(f_star) * f))

    return _per_state(one)(v, B)


def _gaussian_moments(G, relu_a, relu_b):
    """`E[σ_a(aᵀx) σ_b(bᵀx)]` for all pairs, `G` the Gram matrix `aᵀΣb` of the vectors."""
    norms = jnp.sqrt(jnp.maximum(jnp.diag(G), 0.0))
    outer = norms[:, None] * norms[None, :]
    cos = jnp.clip(G / jnp.where(outer > 0, outer, 1.0), -1.0, 1.0)
    theta = jnp.arccos(cos)
    arc = outer * (jnp.sqrt(1.0 - cos**2) + (jnp.pi - theta) * cos) / (2.0 * jnp.pi)
    both, one = relu_a[:, None] & relu_b[None, :], relu_a[:, None] ^ relu_b[None, :]
    return jnp.where(both, arc, jnp.where(one, 0.5 * G, G))


def gaussian_ood_risk(problem: Problem, v, B, activation="identity") -> Float[Array, ...]:
    """Exact `E[(f(x) − f⋆(x))²]`, `x ~ N(0, Σ)`, for σ and σ⋆ in `CLOSED_FORM_ACTIVATIONS`.

    With the `2k` first-layer rows `c = [B; B⋆]`, coefficients `α = [v; −v⋆]` and the moments
    `M_ij = E[σ_i(c_iᵀx) σ_j(c_jᵀx)]` (module docstring), the risk is `αᵀ M α`. For two
    identities it equals `losses.ood_loss`."""
    model = make_model(activation)
    name = model.activation_name
    # A callable gets a closed form only if it is the registered function, never by its name.
    student_ok = name in CLOSED_FORM_ACTIVATIONS and model.activation is ACTIVATIONS[name]
    teacher_ok = problem.teacher_activation in CLOSED_FORM_ACTIVATIONS
    for label, act, ok in (
        ("activation", name, student_ok),
        ("teacher_activation", problem.teacher_activation, teacher_ok),
    ):
        if not ok:
            raise ValueError(
                f"gaussian_ood_risk: {label}={act!r} has no closed form; "
                f"choose one of {CLOSED_FORM_ACTIVATIONS} (as named, registered functions)"
            )
    k = problem.k
    relu = jnp.array([name == "relu"] * k + [problem.teacher_activation == "relu"] * k)

    def one(v, B):
        C = jnp.concatenate([B, problem.B_star], axis=0)  # 2k × d
        G = C @ problem.ood.matmul(C.T)
        alpha = jnp.concatenate([v, -problem.v_star])
        return jnp.maximum(alpha @ _gaussian_moments(G, relu, relu) @ alpha, 0.0)

    return _per_state(one)(v, B)
