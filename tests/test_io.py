"""gaussdiff._io: the one atomic write (whole file or nothing, fsynced, umask permissions)."""

import os
import stat

import pytest
import torch

from gaussdiff._io import atomic_torch_save, atomic_write


def test_atomic_write_replaces_whole_files_with_umask_permissions(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    old = os.umask(0o022)
    try:
        atomic_write(path, "first")
        atomic_write(path, b"second")
    finally:
        os.umask(old)
    assert path.read_text() == "second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]  # no temporary file left


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(path, "kept")
    with pytest.raises(TypeError):
        atomic_write(path, 12345)  # not bytes or text
    assert path.read_text() == "kept" and len(list(tmp_path.iterdir())) == 1


def test_atomic_torch_save_round_trip(tmp_path):
    obj = {"w": torch.arange(5.0), "step": 3}
    atomic_torch_save(obj, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=True)
    assert back["step"] == 3 and torch.equal(back["w"], obj["w"])
