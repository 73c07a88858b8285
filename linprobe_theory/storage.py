"""On-disk storage for sweeps: finished chunks written atomically, so a crash loses at most the
chunk in flight, and a resumed sweep skips what is done. Outer layer: the core never imports it."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-serialisable description of a sweep."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ChunkStore:
    """A folder of `chunk_NNNNN.npz` files plus a `manifest.json` naming the sweep they belong to.

    `resume=False` clears chunks of any earlier sweep; `resume=True` keeps them and refuses to mix
    chunks of a sweep with a different fingerprint. `shared=True` is for a store several
    processes write at once (`distributed.open_store`): it deletes nothing, since another
    process may be writing there (clearing is then done once, by `clear`, before any process
    opens the store).
    """

    def __init__(self, directory, sweep_fingerprint: str, *, resume: bool = False, shared: bool = False):
        self.directory = Path(directory)
        self.fingerprint = sweep_fingerprint
        self.resume = resume
        self.shared = shared
        self.directory.mkdir(parents=True, exist_ok=True)
        manifest = self.directory / "manifest.json"
        if (resume or shared) and manifest.exists():
            found = json.loads(manifest.read_text()).get("fingerprint")
            if found != sweep_fingerprint:
                raise ValueError(
                    f"resume: {self.directory} holds chunks of another sweep (fingerprint {found}, "
                    f"this sweep {sweep_fingerprint}); use another output folder or drop --resume"
                )
        elif not shared:
            for old in self.directory.glob("chunk_*.npz"):
                old.unlink()
        if not shared:
            # Temporaries of writes cut short by a crash are never chunks; drop them.
            for stale in self.directory.glob(".chunk_*.tmp"):
                stale.unlink(missing_ok=True)
        _atomic_write(manifest, lambda f: f.write(json.dumps({"fingerprint": sweep_fingerprint}).encode()))

    @staticmethod
    def clear(directory) -> None:
        """Remove every chunk, temporary and manifest under `directory`, substores included."""
        directory = Path(directory)
        if not directory.exists():
            return
        for pattern in ("chunk_*.npz", ".chunk_*.tmp", "manifest.json", ".manifest.json.*.tmp"):
            for path in directory.rglob(pattern):
                path.unlink(missing_ok=True)

    def substore(self, name: str) -> ChunkStore:
        """A store in the subfolder `name`, for one of several sweeps a study runs (same resume
        and sharing rules, its own fingerprint)."""
        return ChunkStore(
            self.directory / name, f"{self.fingerprint}/{name}", resume=self.resume, shared=self.shared
        )

    def path(self, index: int) -> Path:
        return self.directory / f"chunk_{index:05d}.npz"

    def has(self, index: int) -> bool:
        return self.path(index).exists()

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.path(index)) as data:
            return {name: data[name] for name in data.files}

    def save(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        _atomic_write(self.path(index), lambda f: np.savez(f, **arrays))


def write_csv(path, rows: Mapping[str, np.ndarray]) -> None:
    """A tidy table: one row per run, one column per key of `rows` (1-D arrays of equal length)."""
    names = list(rows)
    n = len(next(iter(rows.values()))) if rows else 0
    for name in names:
        if np.ndim(rows[name]) != 1 or len(rows[name]) != n:
            raise ValueError(f"column {name!r} must be 1-D of length {n}, got shape {np.shape(rows[name])}")

    def write(f):
        text = _TextAdapter(f)
        writer = csv.writer(text)
        writer.writerow(names)
        for i in range(n):
            writer.writerow([_cell(rows[name][i]) for name in names])

    _atomic_write(Path(path), write)


def read_csv(path) -> dict[str, np.ndarray]:
    """Read a table written by `write_csv` back into columns (numeric where possible)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        names = next(reader)
        cols = list(zip(*reader, strict=True)) if names else []
    out = {}
    for name, col in zip(names, cols or [()] * len(names), strict=True):
        try:
            out[name] = np.array([float(x) for x in col])
        except ValueError:
            out[name] = np.array(col, dtype=object)
    return out


def write_json(path, obj) -> None:
    """`obj` as indented JSON with sorted keys (non-JSON values by `str`), written atomically."""
    _atomic_write(
        Path(path), lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())
    )


def _cell(x):
    if isinstance(x, (float, np.floating)):
        return repr(float(x))
    if isinstance(x, (np.integer, np.bool_)):
        return int(x)
    return x


class _TextAdapter:
    """Lets `csv.writer` write into the binary file handle `_atomic_write` provides."""

    def __init__(self, f):
        self._f = f

    def write(self, s: str) -> int:
        return self._f.write(s.encode())
