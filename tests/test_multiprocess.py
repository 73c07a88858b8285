"""Real multi-process sweeps: 2 and 3 JAX processes on 127.0.0.1 under `jax.distributed`, one
shared ChunkStore, and a process lost mid-sweep (SIGKILL), then resumed.

Each process is `_mp_worker.py` (or a study script) in its own interpreter; the reference table
is computed here, in one process, with the same chunk plan, so equality is bit for bit.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from _mp_worker import BATCH_CHUNK, BATCH_RUNS, CHUNK_SIZE, NUM_RUNS, batch_table
from _sweep_worker import cheap_params, cheap_run

from linprobe_theory.storage import read_csv
from linprobe_theory.sweep import run_batch

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_mp_worker.py"
NUM_CHUNKS = -(-NUM_RUNS // CHUNK_SIZE)
ENV = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
ENV.pop("XLA_FLAGS", None)  # one CPU device per process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference():
    return run_batch(cheap_run, cheap_params(NUM_RUNS), key=jax.random.key(3), chunk_size=CHUNK_SIZE)


def launch(tmp_path, n, *, tag, delays=None, extra=(), resume=False):
    port, procs = free_port(), []
    for i in range(n):
        args = [str(i), str(n), str(port), str(tmp_path / "store")]
        args += [str(tmp_path / f"{tag}{i}.npz"), str(tmp_path / f"{tag}{i}.log")]
        args += ["--delay", str(delays[i] if delays else 0.0), *extra] + (["--resume"] if resume else [])
        with open(tmp_path / f"{tag}{i}.out", "w") as out:  # the child keeps its own descriptor
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), *args],
                    cwd=HERE,
                    env=ENV,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


def wait_all(procs, timeout):
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(deadline - time.monotonic(), 0.1)))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"processes still running after {timeout} s (a hang)")
    return codes


def computed_by(tmp_path, tag, i) -> list[int]:
    """The chunks process `i` computed and saved (its worker logs each as it is saved)."""
    log = tmp_path / f"{tag}{i}.log"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def computed(tmp_path, tag, n) -> list[int]:
    return [c for i in range(n) for c in computed_by(tmp_path, tag, i)]


def assert_tables_equal(path, reference):
    with np.load(path) as table:
        assert sorted(table.files) == sorted(reference)
        for name in reference:
            assert np.array_equal(table[name], reference[name]), name


@pytest.mark.parametrize(
    "n, delays",
    [(2, (1.5, 0.0)), (3, (0.0, 2.0, 1.0))],  # the coordinator last; a non-monotone start order
)
def test_every_process_returns_the_single_process_table(tmp_path, reference, n, delays):
    procs = launch(tmp_path, n, tag="run", delays=delays)
    assert wait_all(procs, timeout=240) == [0] * n, [
        (tmp_path / f"run{i}.out").read_text()[-2000:] for i in range(n)
    ]
    # Every chunk computed exactly once over all processes, each by its round-robin owner.
    assert sorted(computed(tmp_path, "run", n)) == list(range(NUM_CHUNKS))
    for i in range(n):
        assert all(c % n == i for c in computed_by(tmp_path, "run", i))
        assert_tables_equal(tmp_path / f"run{i}.npz", reference)


def test_fine_tune_batch_under_two_processes_returns_the_single_process_result(tmp_path):
    """`fine_tune_batch` with a shared store under 2 processes: each reduces every run (cheap,
    deterministic) and solves its own chunks; both return the one-process result bit for bit,
    and every chunk of the solves was computed exactly once."""
    reference = batch_table()
    procs = launch(tmp_path, 2, tag="batch", delays=(1.0, 0.0), extra=["--batch"])
    assert wait_all(procs, timeout=240) == [0, 0], [
        (tmp_path / f"batch{i}.out").read_text()[-2000:] for i in range(2)
    ]
    assert sorted(computed(tmp_path, "batch", 2)) == list(range(-(-BATCH_RUNS // BATCH_CHUNK)))
    for i in range(2):
        assert all(c % 2 == i for c in computed_by(tmp_path, "batch", i))
        assert_tables_equal(tmp_path / f"batch{i}.npz", {n: np.asarray(a) for n, a in reference.items()})


def kill_after_first_chunk(tmp_path, procs, victim, tag):
    log = tmp_path / f"{tag}{victim}.log"
    deadline = time.monotonic() + 180
    while not (log.exists() and log.read_text().strip()):
        if time.monotonic() > deadline:
            pytest.fail("the victim never saved a chunk")
        time.sleep(0.05)
    procs[victim].send_signal(signal.SIGKILL)
    return time.monotonic()


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_process_stops_the_others_and_resume_completes(tmp_path, reference, victim):
    """SIGKILL one of 3 processes after its first chunk. The survivors stop (no hang): when a
    process other than 0 is lost they name its missing chunks between their own chunks, before
    the coordination service (heartbeat 10 s) aborts them, although their own chunks (3 s each)
    would take longer than that; when process 0 (the coordinator) is lost the runtime aborts
    them at once. No finished chunk is lost, and the same command with resume completes with
    the single-process table."""
    procs = launch(tmp_path, 3, tag="run", extra=["--slow", "3", "--stale-after", "2", "--heartbeat", "10"])
    killed_at = kill_after_first_chunk(tmp_path, procs, victim, "run")
    codes = wait_all(procs, timeout=120)
    stopped_after = time.monotonic() - killed_at
    survivors = [i for i in range(3) if i != victim]
    assert codes[victim] == -signal.SIGKILL
    assert all(codes[i] != 0 for i in survivors), codes
    outputs = {i: (tmp_path / f"run{i}.out").read_text() for i in survivors}
    done = set(computed(tmp_path, "run", 3))
    if victim == 0:
        assert stopped_after < 30, stopped_after
        for i in survivors:
            assert "JAX distributed service detected fatal errors" in outputs[i], outputs[i][-3000:]
    else:
        # Named: the lost process and exactly its chunks that never reached the store.
        lost = sorted(set(range(victim, NUM_CHUNKS, 3)) - done)
        assert lost
        for i in survivors:
            assert f"process(es) [{victim}] stopped before saving chunks {lost}" in outputs[i], outputs[i][
                -3000:
            ]
            # Named mid-sweep: the survivor still had chunks of its own to compute.
            assert len(computed_by(tmp_path, "run", i)) < len(range(i, NUM_CHUNKS, 3)), i
        assert stopped_after < 30, stopped_after
    store = tmp_path / "store"
    assert all((store / f"chunk_{c:05d}.npz").exists() for c in done)  # nothing finished is lost

    rerun = launch(tmp_path, 3, tag="resume", resume=True)
    assert wait_all(rerun, timeout=240) == [0, 0, 0], (tmp_path / "resume0.out").read_text()[-3000:]
    assert sorted(computed(tmp_path, "resume", 3)) == sorted(set(range(NUM_CHUNKS)) - done)
    for i in range(3):
        assert_tables_equal(tmp_path / f"resume{i}.npz", reference)


def slurm_env(i: int, n: int) -> dict:
    """What `srun --ntasks=n` on one node sets, for jax.distributed's Slurm auto-detection: the
    coordinator is the first node of the step on port `61440 + job_id mod 4096`."""
    for job_id in range(os.getpid() % 4096, os.getpid() % 4096 + 4096):
        port = 61440 + job_id % 4096
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        break
    return {
        "SLURM_JOB_ID": str(job_id),
        "SLURM_STEP_NODELIST": "127.0.0.1",
        "SLURM_NTASKS": str(n),
        "SLURM_PROCID": str(i),
        "SLURM_LOCALID": str(i),
    }


STUDY_SCRIPT = HERE.parent / "experiments" / "sweep_epsilon.py"
STUDY_ARGS = ["--quick", "--no-progress", "--num-eps", "3", "--seeds", "1", "--chunk-size", "1"]


@pytest.fixture(scope="module")
def single_process_study_csv(tmp_path_factory) -> bytes:
    """The study's table from one process (shared by both launch modes)."""
    out = tmp_path_factory.mktemp("single")
    single = subprocess.run(
        [sys.executable, str(STUDY_SCRIPT), *STUDY_ARGS, "--out", str(out)],
        cwd=out, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    return (out / "sweep_epsilon.csv").read_bytes()


@pytest.mark.parametrize("launch_mode", ["flags", "slurm"])
def test_a_study_script_runs_under_two_processes(tmp_path, launch_mode, single_process_study_csv):
    """The CLI's --coordinator/--num-processes/--process-id, and --distributed under a (faked)
    Slurm step: both processes finish, process 0 writes the table, and it is byte-identical to
    a one-process run's."""
    script, args = STUDY_SCRIPT, STUDY_ARGS
    port, procs = free_port(), []
    for i in range(2):
        if launch_mode == "flags":
            launch = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
            env = ENV
        else:
            launch, env = ["--distributed"], ENV | slurm_env(i, 2)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args, "--out", str(tmp_path / "multi"), *launch],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        )  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "process 1 of 2: done" in outputs[1]
    multi_csv = tmp_path / "multi" / "sweep_epsilon.csv"
    assert multi_csv.read_bytes() == single_process_study_csv
    assert len(read_csv(multi_csv)["eps"]) == 3
