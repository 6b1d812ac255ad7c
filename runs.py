"""Run folders of the training commands: one home for what keeps a training run from being lost.

Used by both trainers (:class:`pcmeta.agents.maml.Trainer`, :func:`pcmeta.agents.eprop.meta_train`) and their
commands (``pcmeta omniglot train``, ``pcmeta arm train``):

- :func:`open_run` holds a run folder under an OS lock (``fcntl.flock`` on :data:`LOCK_NAME`) while the
  training lives: a second process is refused with one line naming the folder and the holder's pid; the lock of
  a killed process is released by the OS, so the next run takes it over by itself. Under the lock it removes the
  temporary files of killed writers (:func:`pcmeta.files.clean_temporaries`) and refuses a folder that holds
  another run unless the training resumes it, or ``overwrite`` deletes that run's own files (named on stderr;
  a folder that also holds other files is refused: ``overwrite`` never deletes what it did not write).
- :func:`check_settings` refuses to resume a run under settings that would change it, naming each
  ("--seed 3 differs from the run's 0"), unless changes are allowed (``--allow-changed-settings``).
- :func:`check_finite` stops a training whose loss, gradient or parameters after a step are not finite, naming
  the iteration and what was not finite, before anything of that state is written (the last good checkpoint
  stays); :func:`check_checkpoint_finite` refuses to resume from a checkpoint with non-finite parameters.

Like :mod:`pcmeta.files`, this module imports nothing of pcmeta but :mod:`pcmeta.files` (torch lazily).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from pcmeta.files import clean_temporaries

__all__ = ["LOCK_NAME", "RUN_FOLDER_HELP", "RunFolderError", "NonFiniteError", "add_run_folder_arguments",
           "RunFolder", "open_run", "changed_settings", "check_settings", "nonfinite", "check_finite",
           "check_checkpoint_finite", "kept_checkpoint"]

#: The lock file of a run folder (:func:`open_run`); it stays in the folder, holding the last holder's pid.
LOCK_NAME = ".pcmeta-lock"

#: What the run-folder flags of the training commands do (``--resume``, ``--overwrite``,
#: ``--allow-changed-settings``; see :func:`add_run_folder_arguments`).
RUN_FOLDER_HELP = {
    "resume": "continue the run in the folder from its last checkpoint (a folder without a checkpoint starts a "
              "new run); the run's settings must be given again unchanged (see --allow-changed-settings)",
    "overwrite": "start again in a folder that holds a run: delete that run's own files first (they are named); "
                 "refused when the folder also holds other files",
    "allow_changed_settings": "with --resume: continue under settings that differ from the run's (each change is "
                              "printed and recorded in the checkpoint) instead of refusing",
}


class RunFolderError(ValueError):
    """A run folder cannot be used as asked: another process holds it, it holds another run, it holds files
    that ``overwrite`` would not delete, or a resumed run was given other settings."""


class NonFiniteError(ValueError):
    """Training stopped: a loss, a gradient, or the parameters after a step are not finite (NaN or infinity)."""


def add_run_folder_arguments(parser, names: Sequence[str] = tuple(RUN_FOLDER_HELP)) -> None:
    """Add the flags ``names`` (default ``--resume``, ``--overwrite`` and ``--allow-changed-settings``, see
    :data:`RUN_FOLDER_HELP`) to the :mod:`argparse` parser of a training command."""
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), action="store_true", help=RUN_FOLDER_HELP[name])


class RunFolder:
    """A run folder held by this process (:func:`open_run`): an exclusive ``fcntl.flock`` on
    :data:`LOCK_NAME` until :meth:`close` (or the process's end: the OS releases the lock of a killed
    process, so the next run takes a stale lock over by itself). ``deleted``: the files ``overwrite`` removed."""

    def __init__(self, path: Path, fd: int | None, deleted: list[Path]):
        self.path, self._fd, self.deleted = path, fd, deleted

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)  # an empty lock file: nobody holds the folder
            finally:
                os.close(fd)  # releases the lock

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def _lock(folder: Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # no flock here (Windows): folders are not locked
        return None
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderError(f"{folder} is in use by another training (pid {holder}); wait for it to end, or stop "
                             "it and --resume") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_run(folder: str | os.PathLike, run_files: Sequence[str], *, resume: bool = False, overwrite: bool = False,
             temporaries: Sequence[str] = ()) -> RunFolder:
    """Hold and check a training's run folder (created if missing); close the returned :class:`RunFolder`
    (or use it as a context manager) when the training ends.

    In this order: lock the folder (:class:`RunFolderError` naming the holder's pid when another process holds
    it); remove the temporary files of killed writers (:func:`clean_temporaries`, plus the glob patterns
    ``temporaries``); then, unless ``resume``, a folder holding any of ``run_files`` (a run's own files) is
    refused, or with ``overwrite`` those files are deleted (reported on stderr) -- unless the folder also holds
    anything else, which ``overwrite`` never deletes: then it is refused, naming those files.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run = RunFolder(folder, _lock(folder), [])
    try:
        clean_temporaries(folder)
        for pattern in temporaries:
            for p in folder.glob(pattern):
                p.unlink(missing_ok=True)
        present = [n for n in run_files if (folder / n).exists()]
        if present and not resume:
            if not overwrite:
                raise RunFolderError(f"{folder} holds a run ({', '.join(present)}): pass --resume to continue it, "
                                     "--overwrite to delete it and start again, or choose another folder")
            foreign = sorted(p.name for p in folder.iterdir() if p.name not in run_files and p.name != LOCK_NAME)
            if foreign:
                raise RunFolderError(f"{folder} holds a run and other files ({', '.join(foreign)}); --overwrite "
                                     "deletes only a run's own files: move the others away or choose another folder")
            for n in present:
                (folder / n).unlink()
                run.deleted.append(folder / n)
            print(f"--overwrite: deleted the previous run's {', '.join(present)} in {folder}", file=sys.stderr)
    except BaseException:
        run.close()
        raise
    return run


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def changed_settings(given: Mapping[str, Any], run: Mapping[str, Any], flags: Mapping[str, str] | None = None,
                     default_flag: str | None = None) -> list[str]:
    """"FLAG VALUE differs from the run's VALUE" for each setting of ``given`` whose value differs from the
    ``run``'s (settings the run does not record are skipped). ``flags`` names the command-line flag of a setting
    (default ``default_flag``, else ``--setting-name``); a flag whose name is not the setting's shows both."""
    out = []
    for k, v in given.items():
        if k not in run or run[k] == v:
            continue
        flag = (flags or {}).get(k, default_flag or "--" + k.replace("_", "-"))
        label = flag if flag == "--" + k.replace("_", "-") else f"{flag} ({k})"
        out.append(f"{label} {_show(v)} differs from the run's {_show(run[k])}")
    return out


def check_settings(source: str | os.PathLike, given: Mapping[str, Any], run: Mapping[str, Any], *,
                   allow: bool = False, flags: Mapping[str, str] | None = None,
                   default_flag: str | None = None) -> list[str]:
    """The :func:`changed_settings` of a resumed run; raises :class:`RunFolderError` naming each of them unless
    ``allow`` (then prints them on stderr and returns them, for the caller to apply and record)."""
    changes = changed_settings(given, run, flags, default_flag)
    if changes and not allow:
        raise RunFolderError(f"{source} was made with a different config: {'; '.join(changes)}. Resume with the "
                             "run's settings, or pass --allow-changed-settings to change them")
    if changes:
        print(f"--allow-changed-settings: resuming {source} with changed settings: {'; '.join(changes)}",
              file=sys.stderr)
    return changes


def nonfinite(tensors: Mapping[str, Any]) -> list[str]:
    """The names of the torch tensors (or numbers) of ``tensors`` that hold a NaN or an infinity (one device
    synchronisation when all are finite)."""
    import torch

    named = [(k, v) for k, v in tensors.items() if v is not None]
    flags = [torch.isfinite(torch.as_tensor(v)).all() for _, v in named]
    if not flags or bool(torch.stack([f.cpu() for f in flags]).all()):
        return []
    return [k for (k, _), f in zip(named, flags) if not bool(f)]


def check_finite(tensors: Mapping[str, Any], what: str, iteration: int, kept: str) -> None:
    """Stop a training (:class:`NonFiniteError`) when one of ``tensors`` is not finite after ``iteration``:
    the message names the iteration, ``what`` (e.g. "loss", "gradient", "parameters after the step") with the
    offending tensors, and ``kept`` (the last good checkpoint, which is left as it is)."""
    bad = nonfinite(tensors)
    if bad:
        raise NonFiniteError(f"iteration {iteration}: non-finite {what} ({', '.join(bad)}); training stopped "
                             f"without writing this state; {kept}")


def check_checkpoint_finite(path: str | os.PathLike, params: Mapping[str, Any]) -> None:
    """Refuse (:class:`NonFiniteError`) to resume from the checkpoint ``path`` when one of its ``params`` is
    not finite."""
    bad = nonfinite(params)
    if bad:
        raise NonFiniteError(f"{path} holds non-finite parameters ({', '.join(bad)}); refusing to resume from it: "
                             "start again with --overwrite, or from a copy of an earlier checkpoint")


def kept_checkpoint(path: str | os.PathLike, iteration: int | None) -> str:
    """The end of :func:`check_finite`'s message: the checkpoint that is kept (``iteration`` None: none yet)."""
    if iteration is None:
        return f"no checkpoint has been written yet ({path})"
    return f"the last good checkpoint {path} (iteration {iteration}) is kept"
