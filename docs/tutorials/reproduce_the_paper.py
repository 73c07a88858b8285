# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reproduce the paper in five minutes
#
# This tutorial walks through the linear-model theory of Kumar et al. (ICLR 2022) with the
# toolkit: build a problem, run fine-tuning (FT), linear probing (LP) and LP-FT, check that the
# features of inputs orthogonal to the training subspace never move, compare FT's OOD loss with
# the paper's lower bound, and sweep the head alignment error $\varphi$. Every number printed
# below is computed when the page is built.
#
# Theory checks run in float64, switched on once at the entry point:

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)
import linprobe_theory as lt

# %% [markdown]
# ## A problem
#
# `ProblemSpec` describes an instance: input dimension $d$, feature dimension $k$, the dimension
# $m$ of the subspace $S$ spanned by the $n$ training inputs, the feature error $\epsilon$ of the
# pretrained $B_0$, and the coverage $\cos\theta_{max}(R_0, S^\perp)$ (how much of the
# pretrained feature space lies outside $S$). `make_problem` draws one with an explicit key.

# %%
spec = lt.ProblemSpec(d=100, k=3, m=20, n=40, eps=0.01, coverage=0.9)
problem = lt.make_problem(spec, key=jax.random.key(0))
print("feature error d(B0, B*) =", float(lt.feature_error(problem.B0, problem.B_star)))
print("coverage cos θ_max      =", float(lt.coverage_cosine(problem)))

# %% [markdown]
# ## FT, LP and LP-FT
#
# FT is gradient flow on $(v, B)$ of the training loss $\hat L(v, B) = \|X B^\top v - y\|^2$,
# integrated with error control. LP trains the head alone (its limit has a closed form), and
# LP-FT runs FT from LP's limit. We start FT from a head with alignment error $\varphi = 0.5$.

# %%
v0 = lt.head_with_alignment(problem, phi=0.5)
ft = lt.fine_tune(problem, v0, t_final=50.0)
lpft = lt.lp_ft(problem, t_final=50.0)
v_lp = lt.linear_probe_solution(problem)

losses = {
    "FT": (ft.v[-1], ft.B[-1]),
    "LP": (v_lp, problem.B0),
    "LP-FT": (lpft.v[-1], lpft.B[-1]),
}
for name, (v, B) in losses.items():
    print(
        f"{name:6s} ID loss {float(lt.id_loss(problem, v, B)):.3e}   OOD loss {float(lt.ood_loss(problem, v, B)):.3e}"
    )

# %% [markdown]
# FT fits the training subspace (ID loss near zero) but its OOD loss is far above LP's: the
# paper's headline. LP-FT keeps LP's OOD advantage.
#
# ## Features of S⊥ never move
#
# Every row of $\nabla_B \hat L = 2 v r^\top X$ lies in $S$, so $B_t P_{S^\perp} = B_0 P_{S^\perp}$
# along the whole flow. `orthogonal_drift` measures $\|(B_t - B_0) P_{S^\perp}\|_F$ at every
# saved time; the features on $S$ do move.

# %%
ts = jnp.linspace(0.0, 50.0, 26)
traj = lt.fine_tune(problem, v0, t_final=50.0, save_at=ts)
drift = lt.orthogonal_drift(problem, traj.B)
moved = jnp.linalg.norm(traj.B[-1] - problem.B0)
print(f"max S-perp drift over {len(ts)} saves: {float(jnp.max(drift)):.1e}")
print(f"total feature change ||B_T - B_0||_F : {float(moved):.3f}")

# %% [markdown]
# ## The FT lower bound
#
# The paper bounds FT's OOD loss from below at **every** time by a quantity set by the head
# alignment error $\varphi$ and the feature error $\epsilon$:
#
# $$\sqrt{L_{ood}(v_t, B_t)} \ge \sqrt{\sigma_{min}(\Sigma)}\,\Big(\frac{\cos\theta_{max}(R_0, S^\perp)}{\sqrt k}\,\frac{\min(\varphi, \varphi^2/\|w_\star\|)}{(1 + \|w_\star\|)^2} - \epsilon\Big).$$
#
# `ft_ood_lower_bound` computes its square; no stopping time can go below it.

# %%
ood_t = lt.ood_loss(problem, traj.v, traj.B)
bound = lt.ft_ood_lower_bound(problem, v0)
print(f"phi                   = {float(lt.head_alignment_error(problem, v0)):.3f}")
print(f"FT lower bound        = {float(bound):.3e}")
print(f"min over t of FT OOD  = {float(jnp.min(ood_t)):.3e}  (ratio {float(jnp.min(ood_t) / bound):.1f})")
assert bool(jnp.all(ood_t >= bound))

# %% [markdown]
# ## A small sweep over φ
#
# One call solves a batch: `fine_tune_batch` takes stacked problems and heads and returns the
# losses at the saved times with a leading run axis. Here 12 heads of prescribed $\varphi$ on 2
# problems; each run's bound is computed beside it.

# %%
phis = np.geomspace(0.05, 3.0, 12)
keys = jax.random.split(jax.random.key(1), 2)
problems = [lt.make_problem(spec, key=k) for k in keys]
runs = [(p, lt.head_with_alignment(p, phi)) for p in problems for phi in phis]
batch = lt.fine_tune_batch(
    [p for p, _ in runs], jnp.stack([v for _, v in runs]), t_final=50.0, save_at=jnp.linspace(0.0, 50.0, 26)
)
best_ood = batch.ood.min(axis=1)
bounds = np.array([float(lt.ft_ood_lower_bound(p, v)) for p, v in runs])
lp_ood = np.array([float(lt.ood_loss(p, lt.linear_probe_solution(p), p.B0)) for p in problems])
print(f"{len(runs)} runs, all solved: {bool(np.all(batch.status <= lt.SolveStatus.STEADY_STATE))}")
print(f"bound violations: {int(np.sum(best_ood < bounds))}")
print(
    f"median FT OOD / bound where the bound is positive: {np.median(best_ood[bounds > 0] / bounds[bounds > 0]):.1f}"
)

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.8))
for i in range(len(problems)):
    sl = slice(i * len(phis), (i + 1) * len(phis))
    ax.loglog(phis, best_ood[sl], "o-", color=f"C{i}", label=f"FT, best over t (problem {i})")
    ax.loglog(phis, np.maximum(bounds[sl], 1e-12), "--", color=f"C{i}", label=f"FT lower bound (problem {i})")
    ax.axhline(lp_ood[i], color=f"C{i}", lw=0.8, ls=":", label=f"LP (problem {i})")
ax.set_xlabel("head alignment error φ")
ax.set_ylabel("OOD loss")
ax.set_ylim(1e-6, None)
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# FT's best OOD loss rises with $\varphi$ and stays above its bound; LP, which never changes the
# features, sits orders of magnitude lower. The main job, `experiments/sweep_alignment.py`, runs
# the same sweep over many seeds, feature errors and random heads.
