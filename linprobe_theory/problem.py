"""The overparameterised two-layer linear model: a problem instance and how to build one.

Setting (Kumar et al., ICLR 2022, Section 3): inputs `x ∈ R^d`, model `f(x) = vᵀ B x`, ground
truth `y = v⋆ᵀ B⋆ x` with `w⋆ = B⋆ᵀ v⋆`; pretrained features `B0`; ID inputs spanning an
`m`-dimensional subspace `S`, with `1 ≤ m < d − k`; OOD inputs with second moment `Σ`.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._validation import (
    check_dimensions,
    check_finite,
    check_int_range,
    check_real_range,
    check_shape,
    is_concrete,
)
from .covariance import OODCovariance
from .linalg import column_space_basis, numerical_rank, random_orthonormal_columns
from .models import ACTIVATIONS

SUBSPACE_KINDS = ("random", "axis")


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
    """Validated recipe for a synthetic problem; `make_problem(spec, key=...)` builds it.

    Attributes:
        d, k, m, n: input dimension, feature dimension, dim of the ID subspace S, number of
            ID examples. Needs `1 ≤ m < d − k` and `n ≥ m`.
        eps: the exact feature error `d(B0, B⋆) = 2 sin(θ/2)`, `θ ∈ [0, π/2]` the principal
            angle by which B0's row space is rotated away from B⋆'s; `0 ≤ eps ≤ √2`.
        v_star_norm: `‖v⋆‖` (equal to `‖w⋆‖`, since B⋆ has orthonormal rows).
        subspace: `"random"` (S drawn uniformly) or `"axis"` (S = the first m coordinates).
        coverage: `None` draws B⋆ uniformly at random (its overlap with S is then whatever it
            is). A number `c ∈ (0, 1]` fixes `cos θ_max(R0, S⊥) = c` exactly, `R0` = row space
            of B0, the factor the FT lower bound needs to be positive; needs `k ≤ m` and
            `m + 2k ≤ d`.
        ood_id_weight, ood_orth_weight: OOD second moment
            `Σ = ood_id_weight · P_S + ood_orth_weight · P_{S⊥}` (both 1: isotropic).
        label_noise: standard deviation of Gaussian noise added to `y` (0: noiseless, as in
            the theory).
        input_scale: ID inputs are `input_scale ·` standard Gaussians in S.
        teacher_activation: the teacher `y = v⋆ᵀ σ⋆(B⋆ x)`, `σ⋆` a name in `ACTIVATIONS`
            (`"identity"`: the paper's linear ground truth).
    """

    d: int
    k: int
    m: int
    n: int
    eps: float = 0.0
    v_star_norm: float = 1.0
    subspace: str = "random"
    coverage: float | None = None
    ood_id_weight: float = 1.0
    ood_orth_weight: float = 1.0
    label_noise: float = 0.0
    input_scale: float = 1.0
    teacher_activation: str = "identity"

    def __post_init__(self):
        check_dimensions(self.d, self.k, self.m)
        check_int_range("n", self.n, self.m, hint=f" (n ≥ m={self.m} so that X spans S)")
        check_real_range("eps", self.eps, 0.0, math.sqrt(2.0))
        check_real_range("v_star_norm", self.v_star_norm, 0.0, low_open=True)
        if self.subspace not in SUBSPACE_KINDS:
            raise ValueError(f"subspace={self.subspace!r} must be one of {SUBSPACE_KINDS}")
        if self.coverage is not None:
            check_real_range("coverage", self.coverage, 0.0, 1.0, low_open=True)
            if self.k > self.m or self.m + 2 * self.k > self.d:
                raise ValueError(
                    f"coverage={self.coverage} needs k ≤ m and m + 2k ≤ d, got "
                    f"d={self.d}, k={self.k}, m={self.m}"
                )
        elif self.eps > 0 and 2 * self.k > self.d:
            raise ValueError(f"eps={self.eps} > 0 needs 2k ≤ d, got d={self.d}, k={self.k}")
        check_real_range("ood_id_weight", self.ood_id_weight, 0.0, low_open=True)
        check_real_range("ood_orth_weight", self.ood_orth_weight, 0.0, low_open=True)
        check_real_range("label_noise", self.label_noise, 0.0)
        check_real_range("input_scale", self.input_scale, 0.0, low_open=True)
        check_teacher_activation(self.teacher_activation)

    @property
    def theta(self) -> float:
        """Principal angle between the row spaces of B0 and B⋆: `eps = 2 sin(θ/2)`."""
        return 2.0 * math.asin(self.eps / 2.0)


class Problem(eqx.Module):
    """One instance of the setting: data, ground truth, pretrained features and OOD moment.

    Attributes:
        X: ID inputs, `n × d`, rows spanning S.
        y: ID labels `X w⋆` (+ optional noise), shape `(n,)`.
        B_star, v_star: ground truth, `w⋆ = B⋆ᵀ v⋆`.
        B0: pretrained features, `k × d`.
        Q_S: orthonormal basis of `S = rowspace(X)`, `d × m`.
        ood: the OOD second moment Σ.
        teacher_activation: the teacher's `σ⋆` (static): `y = v⋆ᵀ σ⋆(B⋆ x)` (+ noise).
    """

    X: Float[Array, "n d"]
    y: Float[Array, " n"]
    B_star: Float[Array, "k d"]
    v_star: Float[Array, " k"]
    B0: Float[Array, "k d"]
    Q_S: Float[Array, "d m"]
    ood: OODCovariance
    teacher_activation: str = eqx.field(static=True, default="identity")

    @property
    def d(self) -> int:
        return self.X.shape[-1]

    @property
    def n(self) -> int:
        return self.X.shape[-2]

    @property
    def k(self) -> int:
        return self.B0.shape[-2]

    @property
    def m(self) -> int:
        return self.Q_S.shape[-1]

    @property
    def w_star(self) -> Float[Array, " d"]:
        """`w⋆ = B⋆ᵀ v⋆`, the ground-truth linear predictor."""
        return self.B_star.T @ self.v_star

    def teacher_outputs(self, x: Float[Array, "N d"]) -> Float[Array, " N"]:
        """`v⋆ᵀ σ⋆(B⋆ x)` for each row x (noiseless); `x w⋆` for the linear teacher."""
        return teacher_outputs(self.B_star, self.v_star, self.teacher_activation, x)

    @classmethod
    def from_arrays(
        cls, *, X, y, B_star, v_star, B0, sigma_ood=None, rank_rtol=None, teacher_activation="identity"
    ) -> Problem:
        """Build a problem from a user's own arrays (numpy or jax), validating them.

        `S` is the row space of `X`, its dimension `m` the numerical rank of `X` (singular values
        above `rank_rtol · σ_max`). `sigma_ood` is `None` (isotropic), a dense `d × d`
        positive-definite matrix, or an `OODCovariance`. `teacher_activation` names the `σ⋆` of
        the teacher `v⋆ᵀ σ⋆(B⋆ x)` that made `y` (used for the logistic loss's labels).
        """
        check_teacher_activation(teacher_activation)
        X = jnp.asarray(X, float)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (n × d), got shape {X.shape}")
        n, d = X.shape
        B0 = jnp.asarray(B0, float)
        if B0.ndim != 2:
            raise ValueError(f"B0 must be a 2-D array (k × d), got shape {B0.shape}")
        k = B0.shape[0]
        y, B_star, v_star = (jnp.asarray(a, float) for a in (y, B_star, v_star))
        check_shape("B0", B0, (k, d))
        check_shape("y", y, (n,))
        check_shape("B_star", B_star, (k, d))
        check_shape("v_star", v_star, (k,))
        for name, a in (("X", X), ("y", y), ("B_star", B_star), ("v_star", v_star), ("B0", B0)):
            check_finite(name, a)
        if rank_rtol is not None:
            check_real_range("rank_rtol", rank_rtol, 0.0, 1.0, low_open=True)
        m = numerical_rank(X, rank_rtol)
        check_dimensions(d, k, m)
        Q_S = column_space_basis(X, m)
        if sigma_ood is None:
            ood = OODCovariance.isotropic(d)
        elif isinstance(sigma_ood, OODCovariance):
            ood = sigma_ood
            if ood.dim != d:
                raise ValueError(f"sigma_ood has dimension {ood.dim}, expected d={d}")
            ood.validate()
        else:
            ood = OODCovariance.from_matrix(sigma_ood)
            if ood.dim != d:
                raise ValueError(f"sigma_ood must have shape ({d}, {d}), got {np.shape(sigma_ood)}")
        return cls(
            X=X,
            y=y,
            B_star=B_star,
            v_star=v_star,
            B0=B0,
            Q_S=Q_S,
            ood=ood,
            teacher_activation=teacher_activation,
        )

    def with_ood(self, sigma_ood) -> Problem:
        """The same problem with another OOD second moment (dense matrix or `OODCovariance`)."""
        ood = sigma_ood if isinstance(sigma_ood, OODCovariance) else OODCovariance.from_matrix(sigma_ood)
        if ood.dim != self.d:
            raise ValueError(f"sigma_ood has dimension {ood.dim}, expected d={self.d}")
        ood.validate()
        return eqx.tree_at(lambda p: p.ood, self, ood)

    def with_B0(self, B0) -> Problem:
        """The same problem with other pretrained features."""
        B0 = jnp.asarray(B0, float)
        check_shape("B0", B0, (self.k, self.d))
        check_finite("B0", B0)
        return eqx.tree_at(lambda p: p.B0, self, B0)


NUMERIC_OVERRIDES = (
    "eps",
    "v_star_norm",
    "coverage",
    "ood_id_weight",
    "ood_orth_weight",
    "label_noise",
    "input_scale",
)


def make_problem(spec: ProblemSpec, *, key: PRNGKeyArray, **overrides) -> Problem:
    """Draw a problem following `spec`; jit- and vmap-friendly in `key`.

    Construction, in an orthonormal frame drawn at random (never a `d × d` rotation):
    - S is spanned by `Q_S`; `X = input_scale · Z Q_Sᵀ`, `Z` an `n × m` Gaussian, so X spans S.
    - `coverage=None`: B⋆ has uniformly random orthonormal rows, and
      `B0 = cos θ B⋆ + sin θ U`, U orthonormal rows orthogonal to B⋆'s row space, so every
      principal angle between the row spaces is θ and `d(B0, B⋆) = 2 sin(θ/2) = eps` exactly.
    - `coverage=c`: rows `b0_i = a q_i + c w_i` (`a = √(1 − c²)`, `q_i ∈ S`, `w_i ∈ S⊥`), so
      `cos θ_max(R0, S⊥) = c`; B⋆'s rows are `cos θ b0_i + sin θ z_i` with
      `z_i = (c q_i − a w_i + u_i + p_i)/√3` (`u_i ∈ S⊥`, `p_i ∈ S` orthogonal to the `q`'s;
      without `p_i` and with `√2` when `m < 2k`): a rotation by θ partly inside S and partly in
      S⊥.

    `overrides` replace numeric fields of `spec` (one of `NUMERIC_OVERRIDES`) and may be traced
    arrays, so a sweep can `vmap` over e.g. `eps` with one compilation. Concrete overrides are
    validated like the spec; `coverage` can only be overridden when `spec.coverage` is set.
    """
    unknown = set(overrides) - set(NUMERIC_OVERRIDES)
    if unknown:
        raise ValueError(
            f"make_problem got unknown overrides {sorted(unknown)}; allowed: {NUMERIC_OVERRIDES}"
        )
    if "coverage" in overrides and spec.coverage is None:
        raise ValueError("coverage can only be overridden when spec.coverage is set (structure is static)")
    concrete = {name: float(val) for name, val in overrides.items() if is_concrete(val)}
    dataclasses.replace(spec, **concrete)  # validates concrete values
    p = {name: overrides.get(name, getattr(spec, name)) for name in NUMERIC_OVERRIDES}
    d, k, m, n = spec.d, spec.k, spec.m, spec.n
    k_frame, k_star, k_v, k_x, k_noise, k_perp = jax.random.split(key, 6)

    # Frame: an orthonormal basis Q_S of S and up to 2k extra directions in S⊥.
    if spec.subspace == "axis":
        Q_S = jnp.eye(d, m)
        extra = jnp.zeros((d, 2 * k))
        rest = random_orthonormal_columns(k_frame, d - m, min(2 * k, d - m))
        extra = extra.at[m:, : rest.shape[1]].set(rest)
    else:
        frame = random_orthonormal_columns(k_frame, d, min(m + 2 * k, d))
        Q_S = frame[:, :m]
        extra = jnp.zeros((d, 2 * k)).at[:, : frame.shape[1] - m].set(frame[:, m:])

    theta = 2.0 * jnp.arcsin(jnp.asarray(p["eps"], float) / 2.0)
    cos_t, sin_t = jnp.cos(theta), jnp.sin(theta)
    if spec.coverage is None:
        # One Haar frame gives B⋆ and directions orthogonal to its row space together.
        star_frame = random_orthonormal_columns(k_star, d, min(2 * k, d))
        B_star = star_frame[:, :k].T
        U_perp = jnp.zeros((k, d)).at[: star_frame.shape[1] - k].set(star_frame[:, k:].T)
        B0 = cos_t * B_star + sin_t * U_perp
    else:
        c = jnp.asarray(p["coverage"], float)
        a = jnp.sqrt(1.0 - c * c)
        q, w, u = Q_S[:, :k].T, extra[:, :k].T, extra[:, k : 2 * k].T
        B0 = a * q + c * w
        # z_i ⟂ every b0_j; its S-part outside span(q) (when m ≥ 2k) keeps LP from fitting
        # the ID data exactly, as for a generic B⋆.
        if m >= 2 * k:
            z = (c * q - a * w + u + Q_S[:, k : 2 * k].T) / math.sqrt(3.0)
        else:
            z = (c * q - a * w + u) / math.sqrt(2.0)
        B_star = cos_t * B0 + sin_t * z

    v_dir = jax.random.normal(k_v, (k,))
    v_star = p["v_star_norm"] * v_dir / jnp.linalg.norm(v_dir)
    X = p["input_scale"] * jax.random.normal(k_x, (n, m)) @ Q_S.T
    ood = OODCovariance.two_subspace(Q_S, p["ood_id_weight"], p["ood_orth_weight"])
    teacher = spec.teacher_activation
    y = teacher_outputs(B_star, v_star, teacher, X) + p["label_noise"] * jax.random.normal(k_noise, (n,))
    return Problem(
        X=X, y=y, B_star=B_star, v_star=v_star, B0=B0, Q_S=Q_S, ood=ood, teacher_activation=teacher
    )


def teacher_outputs(B_star, v_star, activation: str, x) -> Float[Array, " N"]:
    """`v⋆ᵀ σ⋆(B⋆ x)` per row of `x`; for the identity `x (B⋆ᵀ v⋆)`."""
    if activation == "identity":
        return x @ (B_star.T @ v_star)
    return ACTIVATIONS[activation](x @ B_star.T) @ v_star


def check_teacher_activation(name) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(f"teacher_activation={name!r} must be one of {tuple(ACTIVATIONS)}")


def validate_head(problem: Problem, v0, name: str = "v0") -> Float[Array, " k"]:
    """Return `v0` as a float array of shape `(k,)`, raising `ValueError` otherwise."""
    v0 = jnp.asarray(v0, float)
    check_shape(name, v0, (problem.k,))
    if is_concrete(v0):
        check_finite(name, v0)
    return v0
