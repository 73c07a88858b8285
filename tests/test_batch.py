"""`fine_tune_batch` / `linear_probe_batch` / `lp_ft_batch`: one call for a batch equals the single
runs, whatever the input form (stacked or a list), the chunking or the cost grouping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import linprobe_theory as lt
from linprobe_theory.batch import fine_tune_batch, linear_probe_batch, lp_ft_batch

SPEC = lt.ProblemSpec(d=30, k=2, m=8, n=16, coverage=0.9)
RUNS = 6
SAVES = jnp.array([0.0, 0.5, 5.0, 20.0])


@pytest.fixture(scope="module")
def batch():
    keys = jax.random.split(jax.random.key(0), RUNS)
    eps = jnp.linspace(0.0, 0.3, RUNS)
    problems = jax.vmap(lambda k, e: lt.make_problem(SPEC, key=k, eps=e))(keys, eps)
    v0s = jax.vmap(lambda p, k: 2.0 * lt.random_head(p, key=k))(problems, keys)
    return problems, v0s


def _run(problems, i):
    return jax.tree.map(lambda x: x[i], problems)


def test_batch_equals_single_runs(batch):
    problems, v0s = batch
    out = fine_tune_batch(problems, v0s, t_final=20.0, save_at=SAVES, chunk_size=4)
    lpft = lp_ft_batch(problems, t_final=20.0, save_at=SAVES, chunk_size=4)
    assert out.ood.shape == (RUNS, len(SAVES)) and out.v.shape == (RUNS, len(SAVES), SPEC.k)
    for i in range(RUNS):
        problem = _run(problems, i)
        # Same ODE and options, solved alone and in a vmapped chunk: equal far inside rtol 1e-8
        # (atol: the reduced OOD loss's round-off is absolute, ~1e-16·‖w⋆‖²; ε = 0 gives 0).
        single = lt.fine_tune(problem, v0s[i], t_final=20.0, save_at=SAVES)
        np.testing.assert_allclose(
            out.ood[i], lt.ood_loss(problem, single.v, single.B), rtol=1e-9, atol=1e-14
        )
        np.testing.assert_allclose(out.v[i], single.v, rtol=1e-9, atol=1e-12)
        single = lt.lp_ft(problem, t_final=20.0, save_at=SAVES)
        np.testing.assert_allclose(
            lpft.ood[i], lt.ood_loss(problem, single.v, single.B), rtol=1e-9, atol=1e-14
        )
        np.testing.assert_allclose(lpft.v_start[i], lt.linear_probe_solution(problem), rtol=1e-10)
    assert np.all(out.status <= lt.SolveStatus.STEADY_STATE)


def test_linear_probe_batch_equals_single_runs_and_reaches_the_closed_form(batch):
    """LP in the batch equals `linear_probe` run alone (the same ODE, rtol 1e-8: equal far inside
    it), its features never move (OOD/ID losses are those of `(v(t), B0)`), and by t = 200 its
    head is LP's closed-form limit (the slowest LP rate here is ≳ 0.1, so e^{-20} is left)."""
    problems, v0s = batch
    out = linear_probe_batch(problems, v0s, t_final=20.0, save_at=SAVES, chunk_size=4)
    late = linear_probe_batch(problems, v0s, t_final=200.0, chunk_size=4, grad_tol=None)
    assert out.v.shape == (RUNS, len(SAVES), SPEC.k)
    np.testing.assert_array_equal(out.v_start, v0s)
    for i in range(RUNS):
        problem = _run(problems, i)
        single = lt.linear_probe(problem, v0s[i], t_final=20.0, save_at=SAVES)
        np.testing.assert_allclose(out.v[i], single.v, rtol=1e-9, atol=1e-12)
        ood = jax.vmap(lambda v, p=problem: lt.ood_loss(p, v, p.B0))(out.v[i])
        np.testing.assert_allclose(out.ood[i], ood, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(
            late.v[i, -1], lt.linear_probe_solution(problem, v0s[i]), rtol=1e-7, atol=1e-9
        )
    assert np.all(out.status <= lt.SolveStatus.STEADY_STATE)


def test_linear_probe_reduced_is_linear_probe_in_reduced_coordinates(batch):
    problems, v0s = batch
    problem, v0 = _run(problems, 1), v0s[1]
    rp = lt.ReducedProblem.from_problem(problem)
    sol = lt.linear_probe_reduced(rp, v0, t_final=20.0, save_at=SAVES)
    np.testing.assert_allclose(
        sol.ys, lt.linear_probe(problem, v0, t_final=20.0, save_at=SAVES).v, rtol=1e-12
    )
    seen = lt.linear_probe_reduced(
        rp, v0, t_final=20.0, save_at=SAVES, observe=lambda v, Z: jnp.sum((Z - rp.Z0) ** 2)
    )
    np.testing.assert_array_equal(seen.ys, 0.0)  # the features are frozen
    with pytest.raises(ValueError, match="v0"):
        lt.linear_probe_reduced(rp, v0[:1], t_final=1.0)


def _feature_change(rp, v, Z, s):
    return {"feature_change": jnp.linalg.norm(Z - rp.Z0), "head_norm": jnp.linalg.norm(v)}


def test_observe_saves_what_the_user_asks_for(batch):
    problems, v0s = batch
    out = fine_tune_batch(problems, v0s, t_final=20.0, save_at=SAVES, observe=_feature_change, chunk_size=4)
    assert set(out.observed) == {"feature_change", "head_norm"}
    assert out.observed["feature_change"].shape == (RUNS, len(SAVES))
    plain = fine_tune_batch(problems, v0s, t_final=20.0, save_at=SAVES, chunk_size=4)
    assert plain.observed is None
    np.testing.assert_array_equal(out.ood, plain.ood)  # observing does not change the solve
    for i in range(RUNS):
        single = lt.fine_tune(_run(problems, i), v0s[i], t_final=20.0, save_at=SAVES)
        # B − B0 = (Z − Z0) Eᵀ with E orthonormal: the same Frobenius norm.
        change = jnp.linalg.norm(single.B - single.B[0], axis=(1, 2))
        np.testing.assert_allclose(out.observed["feature_change"][i], change, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(out.observed["head_norm"][i], jnp.linalg.norm(single.v, axis=1), rtol=1e-9)


def test_input_form_chunking_and_grouping_do_not_change_the_answer(batch):
    problems, v0s = batch
    ref = fine_tune_batch(problems, v0s, t_final=20.0, chunk_size=RUNS, group_by_cost=False)
    listed = [_run(problems, i) for i in range(RUNS)]
    other = fine_tune_batch(listed, v0s, t_final=20.0, chunk_size=4, group_by_cost=True)
    # Runs in a vmapped solve step independently; only their chunk partners changed.
    np.testing.assert_allclose(other.ood, ref.ood, rtol=1e-12)
    np.testing.assert_array_equal(other.status, ref.status)


def test_variants_pass_through(batch):
    problems, v0s = batch
    reg = lt.WeightDecay(0.05)
    out = fine_tune_batch(
        problems, v0s, t_final=5.0, save_at=SAVES[:3], regularizer=reg, learning_rates=(1.0, 0.5)
    )
    problem = _run(problems, 1)
    single = lt.fine_tune(
        problem, v0s[1], t_final=5.0, save_at=SAVES[:3], regularizer=reg, learning_rates=(1.0, 0.5)
    )
    np.testing.assert_allclose(out.ood[1], lt.ood_loss(problem, single.v, single.B), rtol=1e-9, atol=1e-14)


def test_bad_heads_are_refused(batch):
    problems, v0s = batch
    with pytest.raises(ValueError, match=r"v0s must have shape \(runs, k\) = \(6, 2\)"):
        fine_tune_batch(problems, v0s[:3], t_final=1.0)


def test_equal_settings_reuse_the_compiled_per_run_functions(batch):
    from linprobe_theory import batch_phases as batch_module

    problems, v0s = batch
    fine_tune_batch(problems, v0s, t_final=3.0, rtol=1e-7)
    cached = dict(batch_module._PHASES)
    fine_tune_batch(problems, v0s, t_final=3.0, rtol=1e-7)
    assert batch_module._PHASES == cached  # the same function objects: run_batch's jit cache hits
    fine_tune_batch(problems, v0s, t_final=4.0, rtol=1e-7)
    assert len(batch_module._PHASES) == len(cached) + 1


def test_resume_reuses_only_the_same_batch(batch, tmp_path):
    from linprobe_theory.storage import ChunkStore

    problems, v0s = batch
    store = ChunkStore(tmp_path, "fp", resume=True)
    # Run to t_final (no steady-state stop), so t_stop tells which horizon a chunk was run to.
    first = fine_tune_batch(problems, v0s, t_final=1.0, chunk_size=4, store=store, grad_tol=None)
    again = fine_tune_batch(problems, v0s, t_final=1.0, chunk_size=4, store=store, grad_tol=None)
    np.testing.assert_array_equal(again.ood, first.ood)
    longer = fine_tune_batch(problems, v0s, t_final=5.0, chunk_size=4, store=store, grad_tol=None)
    assert np.all(longer.t_stop > 1.0)  # not the stale t_final = 1 chunks
    assert len(list(tmp_path.glob("batch-*"))) == 2  # one substore per batch
    observed = fine_tune_batch(problems, v0s, t_final=1.0, chunk_size=4, store=store, observe=_feature_change)
    assert len(list(tmp_path.glob("batch-*"))) == 3  # an observer names its own substore
    again = fine_tune_batch(problems, v0s, t_final=1.0, chunk_size=4, store=store, observe=_feature_change)
    np.testing.assert_array_equal(again.observed["feature_change"], observed.observed["feature_change"])


def test_weight_decay_ood_stays_finite_when_the_perp_scale_underflows(batch):
    problems, v0s = batch
    out = fine_tune_batch(problems, v0s, t_final=400.0, regularizer=lt.WeightDecay(1.0))
    assert np.all(np.isfinite(out.ood)), out.ood
