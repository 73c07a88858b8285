"""The overparameterised two-layer linear model: a problem instance (`construction.py` builds synthetic ones).

Setting (Kumar et al., ICLR 2022, Section 3): inputs `x ∈ R^d`, model `f(x) = vᵀ B x`, ground
truth `y = v⋆ᵀ B⋆ x` with `w⋆ = B⋆ᵀ v⋆`; pretrained features `B0`; ID inputs spanning an
`m`-dimensional subspace `S`, with `1 ≤ m < d − k`; OOD inputs with second moment `Σ`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._validation import (
    check_dimensions,
    check_finite,
    check_real_range,
    check_shape,
    is_concrete,
)
from .covariance import OODCovariance
from .linalg import column_space_basis, numerical_rank
from .models import ACTIVATIONS


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


def teacher_outputs(B_star, v_star, activation: str, x) -> Float[Array, " N"]:
    """`v⋆ᵀ σ⋆(B⋆ x)` per row of `x`; for the identity `x (B⋆ᵀ v⋆)`."""
    if activation == "identity":
        return x @ (B_star.T @ v_star)
    return ACTIVATIONS[activation](x @ B_star.T) @ v_star


def check_teacher_activation(name) -> None:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"teacher_activation={name!r} must be one of {tuple(ACTIVATIONS)}")


def validate_head(problem: Problem, v0, name: str = "v0") -> Float[Array, " k"]:
    """Return `v0` as a float array of shape `(k,)`, raising `ValueError` otherwise."""
    v0 = jnp.asarray(v0, float)
    check_shape(name, v0, (problem.k,))
    if is_concrete(v0):
        check_finite(name, v0)
    return v0
