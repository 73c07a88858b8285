"""Synthetic problems: a validated recipe (`ProblemSpec`) and the random construction
(`make_problem`) of the paper's setting with a prescribed feature error and coverage."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from ._validation import check_dimensions, check_int_range, check_real_range, is_concrete
from .covariance import OODCovariance
from .linalg import random_orthonormal_columns, thin_qr
from .problem import Problem, check_teacher_activation, teacher_outputs

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
        isotropic_inputs: make X's m singular values equal, `Xᵀ X = n · input_scale² · P_S`
            (the Gaussian draw orthonormalised): the whitened case with closed-form FT
            trajectories (`closed_forms.isotropic_ft_solution`).
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
    isotropic_inputs: bool = False
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
    p = numeric_parameters(spec, overrides)
    d, k, m = spec.d, spec.k, spec.m
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

    cos_t, sin_t = rotation_cos_sin(p["eps"])
    if spec.coverage is None:
        # One Haar frame gives B⋆ and directions orthogonal to its row space together.
        star_frame = random_orthonormal_columns(k_star, d, min(2 * k, d))
        B_star, B0 = features_from_frame(star_frame, k, cos_t, sin_t)
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
    return assemble_problem(spec, p, (k_v, k_x, k_noise), Q_S, B_star, B0)


def numeric_parameters(spec: ProblemSpec, overrides) -> dict:
    """The numeric fields of `spec` with `overrides` (possibly traced) in place, validated."""
    unknown = set(overrides) - set(NUMERIC_OVERRIDES)
    if unknown:
        raise ValueError(
            f"make_problem got unknown overrides {sorted(unknown)}; allowed: {NUMERIC_OVERRIDES}"
        )
    if "coverage" in overrides and spec.coverage is None:
        raise ValueError("coverage can only be overridden when spec.coverage is set (structure is static)")
    concrete = {name: float(val) for name, val in overrides.items() if is_concrete(val)}
    dataclasses.replace(spec, **concrete)  # validates concrete values
    return {name: overrides.get(name, getattr(spec, name)) for name in NUMERIC_OVERRIDES}


def rotation_cos_sin(eps):
    """`(cos θ, sin θ)` of the principal angle with `d(B0, B⋆) = 2 sin(θ/2) = eps`."""
    theta = 2.0 * jnp.arcsin(jnp.asarray(eps, float) / 2.0)
    return jnp.cos(theta), jnp.sin(theta)


def features_from_frame(star_frame, k: int, cos_t, sin_t):
    """`(B⋆, B0)` from an orthonormal frame's columns: B⋆'s rows are the first k, and
    `B0 = cos θ B⋆ + sin θ U` with U the next k (orthogonal to B⋆'s row space), so every
    principal angle between the row spaces is θ."""
    B_star = star_frame[:, :k].T
    U_perp = jnp.zeros_like(B_star).at[: star_frame.shape[1] - k].set(star_frame[:, k:].T)
    return B_star, cos_t * B_star + sin_t * U_perp


def assemble_problem(spec: ProblemSpec, p, keys, Q_S, B_star, B0) -> Problem:
    """The rest of a problem around its subspace basis and features: the teacher head, the ID
    inputs `X = input_scale · G Q_Sᵀ`, the labels and the two-subspace OOD covariance."""
    k_v, k_x, k_noise = keys
    k, n, m = spec.k, spec.n, spec.m
    v_dir = jax.random.normal(k_v, (k,))
    v_star = p["v_star_norm"] * v_dir / jnp.linalg.norm(v_dir)
    G = jax.random.normal(k_x, (n, m))
    if spec.isotropic_inputs:
        G = math.sqrt(n) * thin_qr(G)[0]
    X = p["input_scale"] * G @ Q_S.T
    ood = OODCovariance.two_subspace(Q_S, p["ood_id_weight"], p["ood_orth_weight"])
    teacher = spec.teacher_activation
    y = teacher_outputs(B_star, v_star, teacher, X) + p["label_noise"] * jax.random.normal(k_noise, (n,))
    return Problem(
        X=X, y=y, B_star=B_star, v_star=v_star, B0=B0, Q_S=Q_S, ood=ood, teacher_activation=teacher
    )
