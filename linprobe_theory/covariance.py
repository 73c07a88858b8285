"""The OOD second moment `Σ = E[x xᵀ]`, stored in factored form.

`Σ = c I + W diag(λ) Wᵀ` with `W ∈ R^{d×r}` orthonormal columns. This covers the isotropic
case (`λ = 0`), a Σ that weights the ID subspace S and its complement S⊥ differently
(`W` a basis of S), and any dense Σ (`W` its eigenvectors, `c = 0`), while quadratic forms cost
`O(d r)` and never build a `d × d` matrix unless the user gave one.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._validation import check_finite, check_orthonormal_rows, check_real_range, is_concrete


class OODCovariance(eqx.Module):
    r"""$\Sigma = c\,I + W\,\mathrm{diag}(\lambda)\,W^\top$, symmetric positive definite."""

    scale: Float[Array, ""]
    basis: Float[Array, "d r"]
    spectrum: Float[Array, " r"]

    @property
    def dim(self) -> int:
        return self.basis.shape[0]

    @classmethod
    def isotropic(cls, d: int, scale: float = 1.0, *, rank: int = 0) -> OODCovariance:
        """`Σ = scale · I` (the paper's worst case over the unit ball when `scale = 1`)."""
        check_real_range("scale", scale, 0.0, low_open=True)
        return cls(jnp.asarray(scale, float), jnp.zeros((d, rank)), jnp.zeros((rank,)))

    @classmethod
    def two_subspace(cls, Q_S, id_weight, orth_weight) -> OODCovariance:
        """`Σ = id_weight · P_S + orth_weight · P_{S⊥}`, `P_S = Q_S Q_Sᵀ`.

        `orth_weight ≫ id_weight` puts the OOD mass on directions the ID data never saw.
        """
        if is_concrete(id_weight, orth_weight):
            check_real_range("id_weight", id_weight, 0.0, low_open=True)
            check_real_range("orth_weight", orth_weight, 0.0, low_open=True)
        m = Q_S.shape[1]
        spectrum = jnp.full((m,), 1.0) * (id_weight - orth_weight)
        return cls(jnp.asarray(orth_weight, float), jnp.asarray(Q_S), spectrum)

    @classmethod
    def from_eigh(cls, basis, eigenvalues, floor: float = 0.0) -> OODCovariance:
        """`Σ = floor · I + basis diag(eigenvalues − floor) basisᵀ`: eigenvalues on span(basis),
        `floor` on its complement. `basis` needs orthonormal columns."""
        basis = jnp.asarray(basis, float)
        eigenvalues = jnp.asarray(eigenvalues, float)
        check_finite("basis", basis)
        check_finite("eigenvalues", eigenvalues)
        if eigenvalues.shape != (basis.shape[1],):
            raise ValueError(
                f"eigenvalues must have shape ({basis.shape[1]},) to match basis "
                f"{basis.shape}, got {eigenvalues.shape}"
            )
        check_orthonormal_rows("basis^T", basis.T)
        out = cls(jnp.asarray(floor, float), basis, eigenvalues - floor)
        out.validate()
        return out

    @classmethod
    def from_matrix(cls, sigma) -> OODCovariance:
        """Factor a dense symmetric positive-definite `d × d` Σ (user-supplied)."""
        sigma = np.asarray(sigma, dtype=float)
        if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
            raise ValueError(f"sigma_ood must be a square matrix, got shape {sigma.shape}")
        check_finite("sigma_ood", sigma)
        asym = float(np.max(np.abs(sigma - sigma.T), initial=0.0))
        if asym > 1e-10 * max(1.0, float(np.max(np.abs(sigma)))):
            raise ValueError(f"sigma_ood must be symmetric; max |Σ − Σᵀ| = {asym:.3g}")
        lam, vecs = np.linalg.eigh(0.5 * (sigma + sigma.T))
        if lam[0] <= 0:
            raise ValueError(
                f"sigma_ood must be positive definite (invertible); its smallest eigenvalue is {lam[0]:.3g}"
            )
        return cls(jnp.asarray(0.0), jnp.asarray(vecs), jnp.asarray(lam))

    def validate(self) -> None:
        """Raise `ValueError` unless Σ is positive definite (concrete values only)."""
        if not is_concrete(self.scale, self.spectrum):
            return
        lo = float(self.min_eigenvalue())
        if not lo > 0:
            raise ValueError(f"sigma_ood must be positive definite; its smallest eigenvalue is {lo:.3g}")

    def _has_complement(self) -> bool:
        return self.basis.shape[1] < self.basis.shape[0]

    def min_eigenvalue(self) -> Float[Array, ""]:
        """`σ_min(Σ)`."""
        eig = self.scale + self.spectrum
        if self._has_complement():
            eig = jnp.append(eig, self.scale)
        return jnp.min(eig)

    def max_eigenvalue(self) -> Float[Array, ""]:
        """`σ_max(Σ)`."""
        eig = self.scale + self.spectrum
        if self._has_complement():
            eig = jnp.append(eig, self.scale)
        return jnp.max(eig)

    def quadratic_form(self, e: Float[Array, "... d"]) -> Float[Array, ...]:
        """`eᵀ Σ e` in `O(d r)`."""
        proj = e @ self.basis
        return self.scale * jnp.sum(e * e, axis=-1) + jnp.sum(self.spectrum * proj * proj, axis=-1)

    def matmul(self, M: Float[Array, "d p"]) -> Float[Array, "d p"]:
        """`Σ M` in `O(d r p)`."""
        return self.scale * M + self.basis @ (self.spectrum[:, None] * (self.basis.T @ M))

    def dense(self) -> Float[Array, "d d"]:
        """The `d × d` matrix (for tests and small problems only)."""
        return self.matmul(jnp.eye(self.dim))
