"""Files written whole or not at all: the one atomic write every module uses.

A reader, or a rerun after a crash or a kill, sees the old file or the new one, never half of
one: the bytes go to a temporary file in the same folder, are flushed and fsynced, and
``os.replace`` puts them in place. The new file gets the permissions a plain ``open`` would
give it (0666 less the umask), not the 0600 of the temporary file.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

__all__: list[str] = []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically (module docstring);
    the parent folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def make_outdir(path, name: str = "outdir") -> Path:
    """The output folder ``path``, created with its parents when missing; a clear ``ValueError``
    naming the argument when it is a file, lies under a file, or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} is a file, not a folder; give a folder (it is created when missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{name}: {path} cannot be created or written ({exc.strerror or exc})") from None
    return path
