"""run_batch: chunking, ordering, resume after an interruption (exception and SIGKILL),
multi-process chunk assignment, and compare_methods' reduced path against full coordinates."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from _sweep_worker import _Recorder, cheap_params, cheap_run

import linprobe_theory as lt
from linprobe_theory.comparison import compare_methods
from linprobe_theory.sweep import (
    chunk_plan,
    chunks_for_process,
    run_batch,
    stiffness_estimates,
    stiffness_order,
)

WORKER = Path(__file__).with_name("_sweep_worker.py")
KEY = jax.random.key(3)  # the worker's key
NUM_CHUNKS = 10  # 30 runs in chunks of 3


@pytest.fixture(scope="module")
def reference():
    return run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=30)


def assert_same(a, b):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def recorder(path, fp="sweep", resume=False):
    store = _Recorder(path, fp, resume=resume)
    store.computed = []
    return store


def test_results_do_not_depend_on_chunking_or_order(reference):
    order = stiffness_order(-np.arange(30) % 7)
    out = run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=4, order=order)
    assert_same(out, reference)
    np.testing.assert_array_equal(out["eps"], cheap_params()["eps"])  # outputs in run order


def test_chunk_plan_and_validation():
    plan = chunk_plan(7, 3, order=[6, 5, 4, 3, 2, 1, 0])
    assert [c.tolist() for c in plan] == [[6, 5, 4], [3, 2, 1], [0]]
    with pytest.raises(ValueError, match="permutation"):
        chunk_plan(3, 2, order=[0, 0, 1])
    with pytest.raises(ValueError, match="leading run axis"):
        run_batch(cheap_run, {"eps": np.zeros(3), "seed": np.zeros((2, 4))}, key=KEY)
    with pytest.raises(ValueError, match="leading run axis"):
        run_batch(cheap_run, {"eps": np.float64(0.1)}, key=KEY)
    with pytest.raises(ValueError, match="chunk_size"):
        run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=0)


@pytest.mark.parametrize("num_chunks", [1, 5, 10, 11])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_every_chunk_has_exactly_one_process(num_chunks, count):
    owned = [chunks_for_process(num_chunks, p, count) for p in range(count)]
    flat = sorted(c for cs in owned for c in cs)
    assert flat == list(range(num_chunks))
    assert max(map(len, owned)) - min(map(len, owned)) <= 1  # balanced
    with pytest.raises(ValueError):
        chunks_for_process(num_chunks, count, count)


def test_two_processes_share_a_store(tmp_path, reference):
    """Each 'process' computes only its chunks; the first one to finish cannot assemble yet,
    the last one reads the other's chunks from the shared store and returns the full table."""
    first = recorder(tmp_path)
    with pytest.raises(RuntimeError, match="other processes"):
        run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=3, store=first, processes=(0, 2))
    assert first.computed == [0, 2, 4, 6, 8]
    second = recorder(tmp_path, resume=True)
    out = run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=3, store=second, processes=(1, 2))
    assert second.computed == [1, 3, 5, 7, 9]
    assert_same(out, reference)
    with pytest.raises(ValueError, match="shared file system"):
        run_batch(cheap_run, cheap_params(), key=KEY, processes=(0, 2))


class StopAfter:
    def __init__(self, chunks):
        self.left = chunks

    def update(self, n):
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


def test_resume_after_interruption_skips_finished_chunks(tmp_path, reference):
    store = recorder(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=3, store=store, progress=StopAfter(2))
    assert store.computed == [0, 1]
    resumed = recorder(tmp_path, resume=True)
    out = run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=3, store=resumed)
    assert resumed.computed == list(range(2, NUM_CHUNKS))
    assert_same(out, reference)
    # A rerun finds everything done; a different chunk plan is refused, not mixed in.
    again = recorder(tmp_path, resume=True)
    assert_same(run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=3, store=again), reference)
    assert again.computed == []
    with pytest.raises(ValueError, match="chunk plan changed"):
        run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=4, store=recorder(tmp_path, resume=True))


def test_resume_after_sigkill(tmp_path, reference):
    """A sweep killed by SIGKILL mid-way loses at most the chunk in flight: the resumed sweep
    recomputes exactly the chunks without a file and equals an uninterrupted run."""
    store_dir, out = tmp_path / "store", tmp_path / "out.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    log = tmp_path / "worker.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), "sweep", str(store_dir), str(out), "--slow", "0.5"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while len(list(store_dir.glob("chunk_*.npz"))) < 3:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "worker too slow to write chunks"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = sorted(int(p.stem.split("_")[1]) for p in store_dir.glob("chunk_*.npz"))
    assert 3 <= len(done) < NUM_CHUNKS and done == list(range(len(done)))
    resumed = recorder(store_dir, "worker-sweep", resume=True)
    result = run_batch(cheap_run, cheap_params(), key=KEY, chunk_size=3, store=resumed)
    assert resumed.computed == list(range(len(done), NUM_CHUNKS))
    assert_same(result, reference)
    assert not list(store_dir.glob("*.tmp"))


def test_compare_methods_reduced_matches_full_coordinates():
    """FT in reduced coordinates vs the full-coordinate reference, both at rtol 1e-8: two
    adaptive solves with different step sequences, each with global error a modest multiple of
    rtol on states of size O(1 + ‖v‖²); the OOD loss is quadratic in them with ‖w⋆‖ = 1, so
    1e-6 = 100·rtol leaves room. The S⊥ drift of the full flow is round-off (exactly 0 in
    exact arithmetic)."""
    spec = lt.ProblemSpec(d=20, k=3, m=6, n=9, eps=0.2)

    @jax.jit
    def run(key):
        k_prob, k_head = jax.random.split(key)
        problem = lt.make_problem(spec, key=k_prob)
        v0 = lt.random_head(problem, key=k_head)
        return compare_methods(problem, v0, t_final=30.0, num_saves=16, rtol=1e-8, full_reference=True)

    for seed in range(2):
        out = run(jax.random.key(seed))
        assert int(out["ft_status"]) <= 1
        assert float(out["ft_full_vs_reduced"]) <= 100 * 1e-8
        assert float(out["ft_orthogonal_drift"]) <= 1e-10


@pytest.mark.parametrize("as_jax", [False, True])
def test_array_params_per_run_are_gathered_chunk_by_chunk(as_jax):
    """Per-run parameters with trailing axes (here a reduced problem's fields), as numpy or as
    device arrays: run i sees row i, whatever the chunking and order."""
    spec = lt.ProblemSpec(d=20, k=3, m=6, n=9, eps=0.2)
    problems = jax.vmap(lambda i: lt.make_problem(spec, key=jax.random.fold_in(KEY, i)))(np.arange(7))
    rps = jax.vmap(lt.ReducedProblem.from_problem)(problems)
    columns = {"Z0": rps.Z0, "curvature": rps.curvature}
    if not as_jax:
        columns = {name: np.asarray(col) for name, col in columns.items()}

    def run(p, key):
        return {"z_sum": p["Z0"].sum(), "lam_max": p["curvature"].max()}

    out = run_batch(run, columns, key=KEY, chunk_size=3, order=stiffness_order(-np.arange(7)))
    np.testing.assert_allclose(out["z_sum"], np.asarray(rps.Z0).sum(axis=(1, 2)), rtol=1e-14)
    np.testing.assert_array_equal(out["lam_max"], np.asarray(rps.curvature).max(axis=1))


def test_stiffness_estimates_use_each_runs_own_problem_and_head():
    spec = lt.ProblemSpec(d=20, k=3, m=6, n=9, eps=0.2)

    def setup(p, key):
        problem = lt.make_problem(spec, key=key, eps=p["eps"])
        return problem, lt.random_head(problem, key=jax.random.fold_in(key, 1))

    params = {"eps": np.linspace(0.0, 0.4, 5)}
    estimates = stiffness_estimates(setup, params, key=KEY, chunk_size=2)
    for i in range(5):
        problem, v0 = setup({"eps": params["eps"][i]}, jax.random.fold_in(KEY, i))
        rp = lt.ReducedProblem.from_problem(problem)
        expected = 2 * float(rp.curvature.max()) * (float(v0 @ v0) + float(np.linalg.norm(rp.Z0, 2)) ** 2)
        np.testing.assert_allclose(estimates[i], expected, rtol=1e-12)


@pytest.mark.parametrize("chunk_size", [7, 30])
def test_run_sweep_groups_by_stiffness_only_when_there_is_more_than_one_chunk(
    monkeypatch, reference, chunk_size
):
    """`run_sweep` orders runs by their stiffness estimates only when they span several chunks
    (in one chunk the grouping cannot change the lockstep cost); either way the outputs are
    in run order and equal to one plain chunk's."""
    import linprobe_theory.study_tools as study_tools

    calls = []

    def estimates(setup, params, *, key):
        calls.append(len(params["eps"]))
        return -np.asarray(params["eps"])  # eps ascends, so the grouped order reverses the runs

    monkeypatch.setattr(study_tools, "stiffness_estimates", estimates)
    config = study_tools.CommonConfig(chunk_size=chunk_size)
    out = study_tools.run_sweep(
        cheap_run, cheap_params(), key=KEY, config=config, store=None, progress=None, setup=lambda p, k: None
    )
    assert calls == ([30] if chunk_size < 30 else [])
    assert_same(out, reference)


HANG_SCRIPT = """
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import linprobe_theory as lt
spec = lt.ProblemSpec(d=100, k=10, m=50, n=100, eps=0.1)

def one(i):
    k_prob, k_head = jax.random.split(jax.random.fold_in(jax.random.key(0), i))
    problem = lt.make_problem(spec, key=k_prob)
    rp = lt.ReducedProblem.from_problem(problem)
    v0 = lt.random_head(problem, key=k_head)
    return lt.reduced.linear_probe_head(rp, v0).sum() + rp.stiffness(v0)

run = jax.jit(jax.vmap(one))
for rep in range(8):
    jax.block_until_ready(run(jnp.arange(32) + 32 * rep))
print("done")
"""


def test_batched_decompositions_do_not_hang():
    """A vmapped program with several decompositions side by side (QRs in make_problem, SVDs in
    from_problem and stiffness, an eigh in linear_probe_head). With jaxlib 0.10.2's batched
    LAPACK kernels it hung (both pool threads blocked in ParallelBatchMap) in the first chunk
    on 2 cores each time we tried it with `jnp.linalg` in place of the library's one-at-a-time
    wrappers; with them it takes seconds. A hang fails here, by timeout."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", HANG_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and "done" in res.stdout, res.stderr[-2000:]
