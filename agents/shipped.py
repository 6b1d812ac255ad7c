"""Finding weights files: pcmeta's shipped weights by name, the authors' released weights, or a path.

A weights argument (``--weights`` on the command line, ``name`` here) is resolved by :func:`resolve_weights`:

- ``None``: the family's default shipped file;
- the name of a shipped file, with or without ``.npz`` (:func:`shipped_names`; e.g. ``classic_5w1s``);
- ``"pcmeta"``: the family's default shipped file;
- ``"authors"``: the authors' released weights of that family (Ortner et al.; not shipped with pcmeta),
  looked for in ``$PCMETA_REFERENCE_DIR``, else ``~/.cache/pcmeta/reference``, under the names of
  :data:`AUTHORS_FILES`; a missing file raises FileNotFoundError that says where to put it;
- anything else: a path to an ``.npz`` file.

Shipped weights are package data in ``pcmeta/agents/weights/`` (each with a ``.md`` beside it that holds the
command that made it).
"""
from __future__ import annotations

import os
from pathlib import Path

#: Folder of the shipped weights (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The default shipped file of each family.
DEFAULTS = {"omniglot": "paper_5w5s.npz", "arm": "arm_eprop.npz"}
#: The authors' released weights, by family: file names in the reference folder.
AUTHORS_FILES = {"omniglot": "authors_omniglot_maml.npz", "arm": "authors_arm_natural_eprop.npz"}
#: Environment variable naming the folder of the authors' released weights.
REFERENCE_ENV = "PCMETA_REFERENCE_DIR"


def reference_dir() -> Path:
    """The folder of the authors' released weights: ``$PCMETA_REFERENCE_DIR``, else ``~/.cache/pcmeta/reference``."""
    env = os.environ.get(REFERENCE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pcmeta" / "reference"


def shipped_names() -> list[str]:
    """Names of the shipped weights files (without ``.npz``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.npz"))


def authors_weights_path(family: str) -> Path:
    """The authors' released weights of ``family``; FileNotFoundError with the fix if absent."""
    if family not in AUTHORS_FILES:
        raise ValueError(f"family must be one of {sorted(AUTHORS_FILES)}, got {family!r}")
    path = reference_dir() / AUTHORS_FILES[family]
    if not path.is_file():
        raise FileNotFoundError(
            f"the authors' released {family} weights are not at {path}: pcmeta does not ship them; put "
            f"{AUTHORS_FILES[family]} into a folder and set {REFERENCE_ENV} to it (or copy it into "
            f"~/.cache/pcmeta/reference), or pass the file's path instead of 'authors'")
    return path


def resolve_weights(name: str | os.PathLike | None, family: str) -> Path:
    """A weights argument as an existing file path (see the module docstring); FileNotFoundError naming the
    shipped names otherwise."""
    if family not in DEFAULTS:
        raise ValueError(f"family must be one of {sorted(DEFAULTS)}, got {family!r}")
    if name is None or str(name) == "pcmeta":
        return WEIGHTS_DIR / DEFAULTS[family]
    if str(name) == "authors":
        return authors_weights_path(family)
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = path.name[:-4] if path.name.endswith(".npz") else path.name
    if str(path) == path.name and (WEIGHTS_DIR / f"{stem}.npz").is_file():
        return WEIGHTS_DIR / f"{stem}.npz"
    raise FileNotFoundError(f"weights not found: {name} (not a file, nor 'pcmeta', 'authors' or one of the "
                            f"shipped {shipped_names()})")
