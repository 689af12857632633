"""Atomic writes (vimogen_core.files): the old file or the new one, never part of one, no temporaries left."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from vimogen_core.files import TEMP_MARKER, atomic_path, atomic_write_bytes, atomic_write_json, remove_stale_temporaries


def test_writer_that_raises_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "data.npy"
    np.save(target, np.arange(4))
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp, open(tmp, "wb") as handle:
            handle.write(b"\x93NUMPY half a header")
            raise RuntimeError("disk full")
    np.testing.assert_array_equal(np.load(target), np.arange(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npy"]


def test_temporary_is_hidden_next_to_the_target_with_its_suffix_and_replaces_it(tmp_path):
    target = tmp_path / "scores.json"
    atomic_write_json(target, {"old": 1})
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".scores.json" + TEMP_MARKER) and tmp.suffix == ".json"
        tmp.write_text('{"new": 2}')
        assert target.read_text() == '{"old": 1}'  # the target changes only on leaving the block
    assert target.read_text() == '{"new": 2}'
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_concurrent_writers_never_produce_a_torn_file(tmp_path):
    target = tmp_path / "shared.bin"
    contents = [bytes([value]) * 1_000_000 for value in range(4)]  # 1 MB each: large enough to be written in pieces
    atomic_write_bytes(target, contents[0])
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(content: bytes) -> None:
        try:
            for _ in range(15):
                atomic_write_bytes(target, content)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    def read() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if data not in contents:
                errors.append(AssertionError(f"torn read: {len(data)} bytes, {len(set(data))} distinct values"))
                return

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(content,)) for content in contents]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert not errors, errors
    assert target.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_remove_stale_temporaries_deletes_only_temporaries(tmp_path):
    (tmp_path / "manifest.parquet").write_bytes(b"kept")
    (tmp_path / f".manifest.parquet{TEMP_MARKER}123-abcd.parquet").write_bytes(b"left by a killed run")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]
