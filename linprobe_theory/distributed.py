"""Sweeps over several processes under `jax.distributed` (outer layer).

One command, run once per process (one per host, or several on one machine), covers a sweep:
every process computes its own chunks (`sweep.chunks_for_process`) into one `ChunkStore` on a
file system they all see, waits for the others' chunks there, and assembles the full table.
Processes meet only through the coordination service (a key-value store and barriers run by
process 0), never through device collectives, so no cross-host device communication is needed.

Each process that opened the shared store keeps a heartbeat file there (`.alive/process_I`, a
counter rewritten every second by a daemon thread). A waiting process declares another lost when
its counter has not changed for `stale_after` seconds of the waiter's own clock, so the hosts'
clocks never need to agree.

What happens when a process is lost (measured in `tests/test_multiprocess.py`):
- another than process 0: the survivors stop with a `RuntimeError` naming the chunks that will
  never come, at their next chunk boundary (or while waiting) once the lost one has been silent
  for `stale_after` seconds (20 by default); at exit the runtime's shutdown barrier then waits for
  the coordination service to declare the lost process dead (`heartbeat_timeout`, 60 s by
  default, which must exceed `stale_after`) and aborts them ("Terminating process because the
  JAX distributed service detected fatal errors"), so they end with SIGABRT after the message;
- process 0 (the coordinator): the service goes with it, and the runtime aborts every other
  process at once ("Terminating process because the JAX distributed service detected fatal
  errors").
Either way every chunk finished before the loss is on disk, and rerunning the same command on
all processes with resume completes the sweep.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import jax

from .storage import ChunkStore

STORE_READY_BARRIER = "linprobe_theory/store-ready"
HEARTBEAT_INTERVAL_S = 1.0
_heartbeat = {"dir": None, "stale_after": 20.0}  # set by open_store


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout: int = 60,
    initialization_timeout: int = 300,
) -> None:
    """`jax.distributed.initialize` for a sweep: explicit `coordinator` ("host:port" of process
    0), `num_processes` and `process_id`, or none of them for the cluster auto-detection
    (Slurm, Open MPI, Kubernetes, Cloud TPU). The coordination service declares a silent
    process dead after `heartbeat_timeout` seconds and then stops every other one; the sweep's
    own liveness check (`open_store`'s `stale_after`) must fire first to name what is missing.
    The default shutdown at exit is a barrier, so process 0 (which runs the service) outlives
    the others."""
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError(
            "coordinator, num_processes and process_id go together (or give none of them for "
            f"cluster auto-detection); got coordinator={coordinator!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}"
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        heartbeat_timeout_seconds=heartbeat_timeout,
        initialization_timeout=initialization_timeout,
    )


def _client():
    from jax._src import distributed as jax_distributed  # the coordination-service client

    return jax_distributed.global_state.client


def _start_heartbeat(directory: Path, process: int) -> None:
    path = directory / ".alive" / f"process_{process}"
    path.parent.mkdir(parents=True, exist_ok=True)

    def beat():
        count = 0
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(count))
            tmp.replace(path)
            count += 1
            time.sleep(HEARTBEAT_INTERVAL_S)

    threading.Thread(target=beat, name="linprobe-heartbeat", daemon=True).start()


class LivenessMonitor:
    """Tells which processes stopped beating: a process whose heartbeat counter has not changed
    for `stale_after` seconds (measured here) is lost."""

    def __init__(self, directory: Path | None, stale_after: float):
        self.directory, self.stale_after = directory, stale_after
        self.seen: dict[int, tuple[str | None, float]] = {}

    def lost(self, processes) -> list[int]:
        if self.directory is None:
            return []
        now, out = time.monotonic(), []
        for p in processes:
            try:
                value = (self.directory / ".alive" / f"process_{p}").read_text()
            except OSError:
                value = None
            last, since = self.seen.get(p, (None, now))
            if value != last or p not in self.seen:
                self.seen[p] = (value, now)
            elif now - since > self.stale_after:
                out.append(p)
        return sorted(out)


def barrier(name: str, timeout_s: float = 600.0) -> None:
    """Wait until every process reaches `name` (a coordination-service barrier; no-op alone)."""
    client = _client()
    if client is not None and jax.process_count() > 1:
        client.wait_at_barrier(name, int(timeout_s * 1000))


def open_store(
    directory, sweep_fingerprint: str, *, resume: bool = False, stale_after: float = 20.0
) -> ChunkStore:
    """A `ChunkStore` that every process of a run can share.

    Alone, this is `ChunkStore(directory, sweep_fingerprint, resume=resume)`. With several
    processes, process 0 alone clears what an earlier run left (unless `resume`), and only then,
    past a barrier, do the others open the store: a process that starts late can never delete
    chunks another already saved. The store is `shared` (it never removes another process's
    temporaries) and its substores keep what is in them. From here on this process beats in
    `directory/.alive`, and a peer silent for `stale_after` seconds counts as lost."""
    if jax.process_count() == 1:
        return ChunkStore(directory, sweep_fingerprint, resume=resume)
    directory = Path(directory)
    if jax.process_index() == 0 and not resume:
        ChunkStore.clear(directory)
    _start_heartbeat(directory, jax.process_index())
    _heartbeat.update(dir=directory, stale_after=stale_after)
    barrier(STORE_READY_BARRIER)
    return ChunkStore(directory, sweep_fingerprint, resume=True, shared=True)


class PeerWatch:
    """The chunks of other processes this one still needs, and whether their owners live.

    `check()` is cheap (a file test per missing chunk and per owner's heartbeat), so `run_batch`
    calls it between its own chunks as well as while waiting: a lost peer is named within
    `stale_after` seconds (plus one chunk) of its loss, however much work this process has
    left, and well before the coordination service's `heartbeat_timeout` aborts the survivors."""

    def __init__(self, store: ChunkStore, missing, owner):
        self.store, self.owner = store, owner
        self.missing = list(missing)
        self.monitor = LivenessMonitor(_heartbeat["dir"], _heartbeat["stale_after"])

    def check(self) -> bool:
        """True once every chunk is in the store; `RuntimeError` naming the chunks that will
        never come as soon as an owner of one has stopped beating (see `open_store`)."""
        self.missing = [c for c in self.missing if not self.store.has(c)]
        if not self.missing:
            return True
        lost = self.monitor.lost(sorted({self.owner(c) for c in self.missing}))
        if lost:
            never = [c for c in self.missing if self.owner(c) in lost]
            raise RuntimeError(
                f"process(es) {lost} stopped before saving chunks {never} to {self.store.directory}; "
                "every chunk finished so far is kept: rerun the same command on every process with "
                "resume to complete the sweep"
            )
        return False


def wait_for_chunks(
    store: ChunkStore, missing, owner, *, timeout_s: float | None, poll_s: float = 0.2, watch=None
):
    """Block until every chunk in `missing` is in `store`, polling the shared file system.

    Raises `RuntimeError` naming the chunks as soon as the process owning one (`owner(c)`) has
    stopped beating (see `open_store`; `watch`: a `PeerWatch` already observing them, which keeps
    what it has seen), and `TimeoutError` after `timeout_s` seconds (None: no limit while the
    owners live)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    watch = PeerWatch(store, missing, owner) if watch is None else watch
    while not watch.check():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"chunks {watch.missing} (processes {sorted({owner(c) for c in watch.missing})}) did not "
                f"reach {store.directory} within {timeout_s} s"
            )
        time.sleep(poll_s)
