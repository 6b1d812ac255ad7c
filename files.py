"""Writing files safely: the one atomic writer and the one result writer of pcmeta.

- :func:`atomic_write` writes through a uniquely named temporary file in the target's folder, flushes it to
  disk and renames it over the target, so a reader (or a killed run) never sees a half-written file and two
  writers never share a temporary file. A failed write removes its temporary file and leaves the old file.
- :func:`write_json` writes a result record (numpy scalars and arrays become plain JSON) atomically, creating
  the parent folder. Every ``--json`` of the command line goes through it.
- :func:`save_npz` / :func:`save_torch` write weights and checkpoints through :func:`atomic_write`.
- :func:`clean_temporaries` removes temporary files a killed writer left behind in a folder.
- :func:`file_sha256` names a file's content (benchmark records carry their weights file's, so that a stale
  record is told from a current one).

Reading weights and checkpoints: every weights ``.npz`` and torch checkpoint pcmeta reads goes through
:func:`load_arrays` / :func:`read_npz` + :func:`check_arrays` and :func:`load_checkpoint`, which check the format
(a readable, undamaged zip/npz or torch file), the keys (missing, unexpected), the shapes, the dtypes (real
floating point) and that every value is finite, against what the model expects. Anything wrong raises ONE
error type, :class:`WeightsFileError` (a ValueError), whose message names the file, what is wrong and what was
expected. A missing file stays a FileNotFoundError.

This module is the base layer of pcmeta: every part may import it; it imports nothing of pcmeta.
"""
from __future__ import annotations

import functools
import hashlib
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


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits. Read once per (path, size, modification time): a grid
    asks for the same weights file's hash for each of its points."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256_of(p, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


# ------------------------------------------------------------------------------------------------- reading
class WeightsFileError(ValueError):
    """A weights or checkpoint file pcmeta cannot use. The message names the file (:attr:`path`), what is wrong
    (:attr:`problem`) and what was expected (:attr:`expected`)."""

    def __init__(self, path: str | os.PathLike, problem: str, expected: str | None = None,
                 what: str = "weights file") -> None:
        self.path, self.problem, self.expected, self.what = Path(path), problem, expected, what
        super().__init__(f"{what} {path}: {problem}" + (f"; expected {expected}" if expected else ""))


class _Text:
    """Spec of a 0-d text array (e.g. a stored JSON config) in :func:`check_arrays`."""

    def __repr__(self) -> str:
        return "TEXT"


#: In an ``expect`` / ``optional`` spec of :func:`check_arrays`: a 0-d text array (``np.array("...")``).
TEXT = _Text()
#: A spec's shape: one entry per axis, an int (that size), None (any size), a name ``"C"`` (the same size
#: wherever the name appears) or ``"k*C"`` (k times that size).
Shape = tuple
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise WeightsFileError(path, "is not a regular file (a folder?)", "a file", what)


def _head(path: Path, what: str, expected: str) -> bytes:
    """The first bytes of ``path``; WeightsFileError for an unreadable or empty file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise WeightsFileError(path, f"cannot be read ({exc.strerror or exc})", expected, what) from exc
    if not head:
        raise WeightsFileError(path, "is empty (0 bytes)", expected, what)
    return head


def _zip_problem(path: Path) -> str | None:
    """None when ``path`` is a zip whose members all pass their CRC-32 check; else what is wrong."""
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError) as exc:
        return f"is a damaged or truncated zip archive ({exc})"
    if bad is not None:
        return f"is damaged: its member {bad!r} fails the CRC-32 check (corrupted or partly written)"
    return None


def _zip_names(path: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return z.namelist()


def read_npz(path: str | os.PathLike, what: str = "weights file") -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, read into memory (``allow_pickle=False``; float arrays in native
    byte order). Checks the format only (see :func:`check_arrays` for keys, shapes and values):
    FileNotFoundError if there is no file, WeightsFileError naming the file for an empty, truncated, damaged
    (failed CRC) or random file, a single ``.npy``, a torch checkpoint, or pickled Python objects."""
    path = Path(path)
    expected = "an .npz archive written by numpy.savez"
    _check_exists(path, what)
    head = _head(path, what, expected)
    if head.startswith(b"\x93NUMPY"):
        raise WeightsFileError(path, "is a single .npy array, not an .npz archive", expected, what)
    if not head.startswith(_ZIP_MAGIC):
        raise WeightsFileError(path, f"is not an .npz archive (no zip signature; it starts with {head!r})",
                               expected, what)
    problem = _zip_problem(path)
    if problem:
        raise WeightsFileError(path, problem, expected, what)
    if any(n.endswith("data.pkl") for n in _zip_names(path)):
        raise WeightsFileError(path, "is a torch checkpoint (torch.save), not an .npz archive", expected, what)
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as d:
            for key in d.files:
                try:
                    a = d[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise WeightsFileError(path, f"{key} holds pickled Python objects (dtype object), which "
                                                     "pcmeta does not load", "real floating-point arrays",
                                               what) from None
                    raise
                if a.dtype.kind == "f" and not a.dtype.isnative:
                    a = a.astype(a.dtype.newbyteorder("="))
                out[key] = a
    except WeightsFileError:
        raise
    except Exception as exc:  # numpy's header parser and zipfile raise many types on a damaged file
        raise WeightsFileError(path, f"cannot be read as an .npz archive ({type(exc).__name__}: {exc})",
                               expected, what) from exc
    return out


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _dim_term(spec) -> tuple[int, str | None]:
    """(factor, name) of a named size: "C" -> (1, "C"), "9*C" -> (9, "C"); ints -> (size, None)."""
    if isinstance(spec, str):
        k, _, name = spec.rpartition("*")
        return (int(k) if k else 1), name
    return spec, None


def _array_info(value) -> tuple[tuple[int, ...], str, str] | None:
    """(shape, dtype kind f/F/c/i/u/b/U/S/O, dtype name) of a numpy array or torch tensor; None otherwise."""
    if isinstance(value, np.ndarray):  # "F": a float wider than 64 bits (torch has none)
        kind = "F" if value.dtype.kind == "f" and value.dtype.itemsize > 8 else value.dtype.kind
        return value.shape, kind, str(value.dtype)
    if type(value).__module__.startswith("torch") and hasattr(value, "is_floating_point"):
        dt = value.dtype
        kind = "c" if dt.is_complex else "f" if dt.is_floating_point else "b" if str(dt) == "torch.bool" else "i"
        return tuple(value.shape), kind, str(dt).replace("torch.", "")
    return None


def _count_nonfinite(value) -> tuple[int, int]:
    """(NaN count, inf count) of a float array or tensor."""
    if isinstance(value, np.ndarray):
        return int(np.isnan(value).sum()), int(np.isinf(value).sum())
    return int(value.isnan().sum()), int(value.isinf().sum())


def check_arrays(arrays: dict, expect: dict, *, path: str | os.PathLike, what: str = "weights file",
                 optional: dict | None = None, dims: dict[str, int] | None = None, label: str = "") -> dict[str, int]:
    """Check ``arrays`` (numpy arrays or torch tensors by key, as read from ``path``) against ``expect``.

    ``expect`` / ``optional`` map each required / allowed key to a :data:`Shape` (None: any shape) or
    :data:`TEXT`. Array keys must hold real floating-point values, all finite; TEXT keys a 0-d string. Named
    sizes (``"C"``, ``"9*C"``) must agree across arrays; ``dims`` pre-sets some (e.g. from a stored config).
    ``label`` prefixes key names in messages (e.g. ``"params"``). Returns the named sizes; raises
    :class:`WeightsFileError` naming ``path`` and the first problem found, with what was expected."""
    optional = {k: v for k, v in (optional or {}).items() if k not in expect}
    specs = {**expect, **optional}
    name = (lambda k: f"{label}[{k!r}]") if label else (lambda k: k)
    layout = ", ".join(expect) + (f" (optional: {', '.join(optional)})" if optional else "")
    if not isinstance(arrays, dict):
        raise WeightsFileError(path, f"{label or 'its content'} is a {type(arrays).__name__}, not a dict of arrays",
                               f"the keys {layout}", what)
    missing = [k for k in expect if k not in arrays]
    extra = [k for k in arrays if k not in specs]
    if missing or extra:
        def keys(ks):
            return f"the key{'s' if len(ks) > 1 else ''} {', '.join(map(name, ks))}"

        problem = "; ".join(p for p in (f"lacks {keys(missing)}" if missing else "",
                                        f"has unexpected {keys(extra)}" if extra else "") if p)
        raise WeightsFileError(path, problem, f"the keys {layout}", what)
    bound = dict(dims or {})
    for key, spec in specs.items():  # bind the plain names first, then the multiples
        if key in arrays and isinstance(spec, tuple) and (info := _array_info(arrays[key])) is not None:
            if len(info[0]) == len(spec):
                for size, s in zip(info[0], spec):
                    if isinstance(s, str) and "*" not in s:
                        bound.setdefault(s, size)
    for key, spec in specs.items():
        if key in arrays:
            _check_one(arrays[key], spec, name(key), bound, path, what)
    return bound


def _check_one(value, spec, key: str, bound: dict[str, int], path, what: str) -> None:
    info = _array_info(value)
    if info is None:
        raise WeightsFileError(path, f"{key} is a {type(value).__name__}, not an array", "an array", what)
    shape, kind, dtype = info
    if spec is TEXT:
        if kind not in "US" or shape != ():
            raise WeightsFileError(path, f"{key} is a {dtype} array of shape {_fmt_shape(shape)}",
                                   "a text string (0-d str array)", what)
        return
    if kind != "f":
        raise WeightsFileError(path, f"{key} has dtype {dtype}", "real floating-point values (float16/32/64)",
                               what)
    if spec is not None:
        want = []
        for s in spec:
            k, dim = _dim_term(s)
            if dim is not None and dim not in bound and shape and len(shape) == len(spec):
                size = shape[len(want)]
                if size % k == 0:
                    bound[dim] = size // k
            want.append(k * bound[dim] if dim is not None and dim in bound else (None if dim else k))
        if len(shape) != len(spec) or any(w is not None and w != n for w, n in zip(want, shape)):
            names = ", ".join(f"{d} = {v}" for d, v in bound.items() if any(isinstance(s, str) and
                                                                            _dim_term(s)[1] == d for s in spec))
            sym = _fmt_shape(spec) if any(isinstance(s, str) for s in spec) else None
            exp = f"{sym} = {_fmt_shape(want)}" if sym else _fmt_shape(want)
            raise WeightsFileError(path, f"{key} has shape {_fmt_shape(shape)}",
                                   f"shape {exp}" + (f" ({names})" if names else ""), what)
    n_nan, n_inf = _count_nonfinite(value)
    if n_nan or n_inf:
        total = int(np.prod(shape))
        raise WeightsFileError(path, f"{key} holds {n_nan} NaN and {n_inf} infinite of its {total} values",
                               "finite values", what)


def load_arrays(path: str | os.PathLike, expect: dict, what: str = "weights file", *, optional: dict | None = None,
                dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path``, checked: :func:`read_npz` (format) then :func:`check_arrays`
    (keys, shapes, dtypes, finite values) against ``expect`` / ``optional``. FileNotFoundError if there is no
    file; :class:`WeightsFileError` naming the file otherwise."""
    arrays = read_npz(path, what)
    check_arrays(arrays, expect, path=path, what=what, optional=optional, dims=dims)
    return arrays


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint", *, required: tuple[str, ...] = (),
                    map_location: Any = "cpu") -> dict:
    """A torch checkpoint (a dict), loaded with ``torch.load(..., weights_only=True)`` after checking the file:
    FileNotFoundError if there is none, :class:`WeightsFileError` naming the file for an empty, truncated,
    damaged (failed CRC), random or ``.npz`` file, content that is not a dict, or a missing ``required`` key.
    Check its arrays with :func:`check_arrays`."""
    import torch

    path = Path(path)
    expected = "a torch checkpoint (torch.save of a dict" + (f" with {', '.join(required)})" if required else ")")
    _check_exists(path, what)
    head = _head(path, what, expected)
    if not head.startswith(_ZIP_MAGIC + (b"\x80",)):  # torch.save writes a zip (legacy format: a pickle)
        raise WeightsFileError(path, f"is not a torch checkpoint (no zip or pickle signature; it starts with {head!r})",
                               expected, what)
    if head.startswith(_ZIP_MAGIC):
        problem = _zip_problem(path)
        if problem:
            raise WeightsFileError(path, problem, expected, what)
        names = _zip_names(path)
        if names and not any(n.endswith("data.pkl") for n in names):
            kind = "an .npz archive (numpy.savez)" if any(n.endswith(".npy") for n in names) else "a zip archive"
            raise WeightsFileError(path, f"is {kind}, not a torch checkpoint", expected, what)
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on a bad file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise WeightsFileError(path, f"cannot be loaded as a torch checkpoint ({type(exc).__name__}"
                                     f"{': ' + first if first else ''})", expected, what) from exc
    if not isinstance(ck, dict):
        raise WeightsFileError(path, f"holds a {type(ck).__name__}, not a dict", expected, what)
    missing = [k for k in required if k not in ck]
    if missing:
        raise WeightsFileError(path, f"lacks {', '.join(missing)} (it has {', '.join(map(str, ck)) or 'no keys'})",
                               expected, what)
    return ck

