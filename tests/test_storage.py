"""ChunkStore: atomic chunk files, fingerprint check on resume, tidy CSV tables."""

import numpy as np
import pytest

from linprobe_theory import storage
from linprobe_theory.storage import ChunkStore, fingerprint, read_csv, write_csv


def test_fingerprint_is_stable_and_discriminating():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_save_load_roundtrip_and_has(tmp_path):
    store = ChunkStore(tmp_path, "f1")
    assert not store.has(0)
    store.save(0, {"x": np.arange(3.0), "s": np.array([1, 2, 3])})
    assert store.has(0)
    out = store.load(0)
    np.testing.assert_array_equal(out["x"], np.arange(3.0))
    np.testing.assert_array_equal(out["s"], [1, 2, 3])


def test_resume_keeps_chunks_and_fresh_start_clears_them(tmp_path):
    ChunkStore(tmp_path, "f1").save(0, {"x": np.ones(2)})
    assert ChunkStore(tmp_path, "f1", resume=True).has(0)
    assert not ChunkStore(tmp_path, "f1", resume=False).has(0)


def test_resume_refuses_another_sweep(tmp_path):
    ChunkStore(tmp_path, "f1").save(0, {"x": np.ones(2)})
    with pytest.raises(ValueError, match="another sweep"):
        ChunkStore(tmp_path, "f2", resume=True)
    assert (tmp_path / "chunk_00000.npz").exists()  # refused, not cleared


def test_failed_write_leaves_no_partial_chunk(tmp_path, monkeypatch):
    """A write that dies half-way (here: an exception after some bytes) leaves neither the chunk
    nor its temporary file; an earlier version of the chunk, if any, is untouched."""
    store = ChunkStore(tmp_path, "f1")
    store.save(1, {"x": np.zeros(4)})

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04partial")
        raise OSError("disk full")

    monkeypatch.setattr(storage.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        store.save(0, {"x": np.ones(4)})
    with pytest.raises(OSError):
        store.save(1, {"x": np.ones(4)})
    monkeypatch.undo()
    assert not store.has(0)
    np.testing.assert_array_equal(store.load(1)["x"], np.zeros(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk_00001.npz", "manifest.json"]


def test_temporaries_of_a_killed_write_are_not_chunks(tmp_path):
    """A SIGKILL during a write leaves `.chunk_NNNNN.npz.*.tmp`; it never counts as a finished
    chunk and is removed when the store is opened again."""
    ChunkStore(tmp_path, "f1")
    (tmp_path / ".chunk_00002.npz.abc.tmp").write_bytes(b"PK\x03\x04trunc")
    store = ChunkStore(tmp_path, "f1", resume=True)
    assert not store.has(2)
    assert not list(tmp_path.glob("*.tmp"))


def test_csv_roundtrip(tmp_path):
    rows = {"a": np.array([1.0, 2.5e-300]), "b": np.array([3, 4]), "c": np.array(["x", "y"])}
    write_csv(tmp_path / "t.csv", rows)
    back = read_csv(tmp_path / "t.csv")
    np.testing.assert_array_equal(back["a"], rows["a"])
    np.testing.assert_array_equal(back["b"], [3.0, 4.0])
    assert list(back["c"]) == ["x", "y"]
    with pytest.raises(ValueError, match="1-D"):
        write_csv(tmp_path / "u.csv", {"a": np.ones(2), "b": np.ones(3)})
