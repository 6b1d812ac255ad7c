"""Writing files safely: the one atomic writer and the one result writer of pcmeta.

- :func:`atomic_write` writes through a uniquely named temporary file in the target's folder, flushes it to
  disk and renames it over the target, so a reader (or a killed run) never sees a half-written file and two
  writers never share a temporary file. A failed write removes its temporary file and leaves the old file.
- :func:`write_json` writes a result record (numpy scalars and arrays become plain JSON) atomically, creating
  the parent folder. Every ``--json`` of the command line goes through it.
- :func:`save_npz` / :func:`save_torch` write weights and checkpoints through :func:`atomic_write`.
- :func:`clean_temporaries` removes temporary files a killed writer left behind in a folder.

This module is the base layer of pcmeta: every part may import it; it imports nothing of pcmeta.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

import numpy as np

_TMP_SUFFIX = ".pcmeta-tmp"


def atomic_write(path: str | os.PathLike, writer: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically: ``writer(f)`` fills a binary temporary file that then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results and weights are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with _suppress_missing():
            os.unlink(tmp)
        raise
    return path


class _suppress_missing:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, FileNotFoundError)


def clean_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` left in ``folder`` by killed writers."""
    folder = Path(folder)
    removed = []
    for p in folder.glob(f".*{_TMP_SUFFIX}") if folder.is_dir() else ():
        with _suppress_missing():
            p.unlink()
            removed.append(p)
    return removed


def _plain(obj: Any) -> Any:
    """JSON fallback: numpy scalars/arrays, paths and objects with ``to_dict``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(obj: Any) -> str:
    """``obj`` as indented JSON text (numpy values as plain numbers and lists)."""
    return json.dumps(obj, indent=2, default=_plain) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (parent folders created); returns the path."""
    text = to_json(obj).encode()
    return atomic_write(path, lambda f: f.write(text))


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """``numpy.savez`` of ``arrays`` to ``path`` atomically (no pickled objects)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` of ``obj`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
