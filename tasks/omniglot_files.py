"""Omniglot files: locating, downloading, reading, preprocessing and caching the images.

Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015; MIT license) has 1623 handwritten characters
from 50 alphabets, 20 drawings each, as 105 x 105 one-bit PNGs. The official archives are
``images_background.zip`` (30 alphabets, 964 characters) and ``images_evaluation.zip`` (20 alphabets,
659 characters) in the ``python/`` folder of the brendenlake/omniglot repository.

Where the data is looked for (:func:`resolve_data_dir`): an explicit ``data_dir``, else
``$PCMETA_DATA_DIR``, else ``~/.cache/pcmeta/omniglot``. Either the zips or their extracted folders
(``images_background/<Alphabet>/characterNN/*.png``) are accepted. Reading never checks md5 sums (a
pixel-identical re-encoded copy has other checksums); only :func:`download` does.

Preprocessing to 28 x 28 pixels, values in [0, 1]:

- ``"paper"`` (Ortner et al.): background 1, ink 0 (the PNGs as they are, not inverted), resized
  bilinearly without antialiasing with half-pixel centres (TensorFlow 2's ``tf.image.resize`` default,
  identical to ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``).
- ``"classic"`` (Finn et al. 2017): Lanczos resize with Pillow, then inverted (ink 1, background 0).
  The 1-bit image is converted to 8-bit grey first; Pillow would otherwise silently use nearest
  neighbour for 1-bit images.

The decoded 28 x 28 arrays are cached as one ``.npy`` per archive and preprocessing in a cache folder
(``$PCMETA_CACHE_DIR``, else ``~/.cache/pcmeta/omniglot-cache``), keyed by the archive contents (the CRCs
in the zip directory), so a second run loads in well under a second. Downloads and cache files are
written through :func:`pcmeta.files.atomic_write`, so no half-written file is ever left behind.

The splits and the task sampler built on these images are in :mod:`pcmeta.tasks.omniglot`, which also
re-exports every public name of this module.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

import numpy as np

from pcmeta.files import atomic_write

#: The two official archives and their md5 sums (brendenlake/omniglot, python/).
OFFICIAL_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
OFFICIAL_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}"
SUBSETS = ("background", "evaluation")
PREPROCESSINGS = ("paper", "classic")
IMAGE_SIZE = 28
N_DRAWINGS = 20
#: Expected (alphabets, characters) per archive, checked on load.
EXPECTED_COUNTS = {"background": (30, 964), "evaluation": (20, 659)}


class OmniglotDataError(ValueError):
    """The Omniglot data is missing, corrupted or could not be downloaded (message says what to do)."""


# ----------------------------------------------------------------------------------------- locations
def _resolve_dir(given: str | os.PathLike | None, env_var: str, cache_leaf: str) -> Path:
    """``given``, else ``$env_var``, else ``$XDG_CACHE_HOME/pcmeta/<cache_leaf>`` (default ~/.cache)."""
    if given is not None:
        return Path(given).expanduser()
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pcmeta" / cache_leaf


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the Omniglot zips: ``data_dir``, else ``$PCMETA_DATA_DIR``, else the user cache."""
    return _resolve_dir(data_dir, "PCMETA_DATA_DIR", "omniglot")


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where decoded arrays are cached: ``cache_dir``, else ``$PCMETA_CACHE_DIR``, else the user cache."""
    return _resolve_dir(cache_dir, "PCMETA_CACHE_DIR", "omniglot-cache")


def _missing_message(data_dir: Path, name: str) -> str:
    return (
        f"Omniglot not found: expected {data_dir / name} (or the extracted folder "
        f"{data_dir / name[:-4]}/). Run `pcmeta data omniglot --data-dir {data_dir}` to download it, or put "
        f"the official {name} from https://github.com/brendenlake/omniglot/tree/master/python there "
        f"(or pass --data-dir / set PCMETA_DATA_DIR)."
    )


def _source(data_dir: Path, subset: str) -> Path:
    name = f"images_{subset}.zip"
    zpath = data_dir / name
    if zpath.is_file():
        return zpath
    folder = data_dir / f"images_{subset}"
    if folder.is_dir():
        return folder
    raise OmniglotDataError(_missing_message(data_dir, name))


def require_data(data_dir: str | os.PathLike | None = None) -> Path:
    """The resolved data folder (:func:`resolve_data_dir`) after checking that both subsets are there;
    :class:`OmniglotDataError` saying what to do otherwise (before any work is started on them)."""
    ddir = resolve_data_dir(data_dir)
    for subset in ("background", "evaluation"):
        _source(ddir, subset)
    return ddir


# ----------------------------------------------------------------------------------------- download
def download(data_dir: str | os.PathLike | None = None, *, force: bool = False, timeout_s: float = 60.0,
             progress: bool = True) -> Path:
    """Fetch the official zips into ``data_dir`` (see :func:`resolve_data_dir`) and verify their md5.

    Files already present are kept (and not re-checked: a pixel-identical copy has other checksums)
    unless ``force``. Downloads go to a temporary file in the same folder that is renamed only after
    the md5 matched (:func:`pcmeta.files.atomic_write`), so no half-written archive is ever left behind.

    Raises:
        OmniglotDataError: offline, HTTP error, or checksum mismatch (the message says which file to
            put where).
    """
    ddir = resolve_data_dir(data_dir)
    ddir.mkdir(parents=True, exist_ok=True)
    for name, md5 in OFFICIAL_MD5.items():
        target = ddir / name
        if target.is_file() and not force:
            continue
        _download_one(OFFICIAL_URL.format(name=name), target, md5, timeout_s, progress)
    return ddir


def _download_one(url: str, target: Path, md5: str, timeout_s: float, progress: bool) -> None:
    """Download ``url`` to ``target`` atomically; nothing is kept unless its md5 is ``md5``."""

    def writer(out: IO[bytes]) -> None:
        got = _fetch(url, out, target, timeout_s, progress)
        if got != md5:
            raise OmniglotDataError(
                f"checksum mismatch for {url}: md5 {got}, expected {md5}; nothing was kept. "
                f"Put the official {target.name} at {target} by hand."
            )

    atomic_write(target, writer)


def _fetch(url: str, out: IO[bytes], target: Path, timeout_s: float, progress: bool) -> str:
    """Stream ``url`` into ``out``; returns the md5 of what was written."""
    h = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=target.name)
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise OmniglotDataError(
            f"could not download {url} ({exc}). Download it by hand and put it at {target}"
        ) from exc
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- decoding
def _zip_members(src: Path) -> list[zipfile.ZipInfo]:
    """The directory of the zip ``src``; an unreadable zip is an :class:`OmniglotDataError`."""
    try:
        with zipfile.ZipFile(src) as zf:
            return zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise OmniglotDataError(
            f"{src} is not a readable zip ({exc}); replace it with the official {src.name} "
            f"(`pcmeta data omniglot --force`)"
        ) from exc


def _list_entries(src: Path) -> list[tuple[str, str, str]]:
    """(alphabet, character, entry) for every PNG, sorted; entry is the zip member or file path."""
    out = []
    if src.is_file():
        for n in (info.filename for info in _zip_members(src)):
            parts = n.strip("/").split("/")
            if len(parts) == 4 and parts[3].lower().endswith(".png"):
                out.append((parts[1], parts[2], n))
    else:
        for p in src.glob("*/*/*.png"):
            out.append((p.parent.parent.name, p.parent.name, str(p)))
    out.sort()
    return out


def _fingerprint(src: Path) -> str:
    """A content key of an archive (CRCs from the zip directory) or folder (names, sizes, mtimes)."""
    h = hashlib.sha1()
    if src.is_file():
        for info in sorted(_zip_members(src), key=lambda i: i.filename):
            h.update(f"{info.filename}:{info.CRC}:{info.file_size}\n".encode())
    else:
        for p in sorted(src.glob("*/*/*.png")):
            st = p.stat()
            h.update(f"{p.relative_to(src)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _resize(raw: np.ndarray, preprocessing: str) -> np.ndarray:
    """(n, 105, 105) bool (True = white) -> (n, 28, 28) float32 in [0, 1] as the preprocessing asks."""
    if preprocessing == "paper":
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(raw.astype(np.float32))[:, None]
        y = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False,
                          antialias=False)
        return y[:, 0].numpy().astype(np.float32)
    from PIL import Image

    out = np.empty((raw.shape[0], IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for i, im in enumerate(raw):
        pil = Image.fromarray((im * 255).astype(np.uint8), mode="L")
        small = pil.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.LANCZOS)
        out[i] = 1.0 - np.asarray(small, np.float32) / 255.0
    return np.clip(out, 0.0, 1.0)


def _decode(src: Path, entries: list[tuple[str, str, str]], progress: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    raw = np.empty((len(entries), 105, 105), bool)
    it: Iterable = entries
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(entries, desc=f"decoding {src.name}", unit="img", leave=False)
    zf = zipfile.ZipFile(src) if src.is_file() else None
    try:
        for i, (_, _, entry) in enumerate(it):
            try:
                data = zf.read(entry) if zf is not None else Path(entry).read_bytes()
                with Image.open(io.BytesIO(data)) as im:
                    arr = np.asarray(im.convert("L")) > 127
            except (zipfile.BadZipFile, OSError, UnidentifiedImageError, EOFError, ValueError) as exc:
                raise OmniglotDataError(
                    f"corrupted Omniglot file {entry!r} in {src} ({exc}); replace {src} with the official "
                    f"{src.name if src.is_file() else src.name + '.zip'} (`pcmeta data omniglot --force`)"
                ) from exc
            if arr.shape != (105, 105):
                raise OmniglotDataError(f"{entry!r} in {src} is {arr.shape}, expected a 105x105 image")
            raw[i] = arr
    finally:
        if zf is not None:
            zf.close()
    return raw


def _characters(src: Path, entries: list[tuple[str, str, str]]) -> list[str]:
    """``"Alphabet/characterNN"`` per character of the sorted ``entries``; each must have 20 drawings."""
    characters: list[str] = []
    index: dict[str, int] = {}
    for alpha, char, _ in entries:
        name = f"{alpha}/{char}"
        if name not in index:
            index[name] = len(characters)
            characters.append(name)
    counts = np.bincount([index[f"{a}/{c}"] for a, c, _ in entries], minlength=len(characters))
    bad = [characters[i] for i in np.flatnonzero(counts != N_DRAWINGS)]
    if bad:
        raise OmniglotDataError(f"{src}: characters without exactly {N_DRAWINGS} drawings: {bad[:5]}")
    return characters


@dataclass
class OmniglotImages:
    """All drawings of one archive, preprocessed.

    Attributes:
        images: (n_characters, 20, 28, 28) float32 in [0, 1].
        characters: ``"Alphabet/characterNN"`` per character, sorted.
        subset: ``"background"`` or ``"evaluation"``.
        preprocessing: ``"paper"`` or ``"classic"``.
    """

    images: np.ndarray
    characters: list[str]
    subset: str
    preprocessing: str

    @property
    def alphabets(self) -> list[str]:
        """The distinct alphabet names, sorted."""
        return sorted({c.split("/")[0] for c in self.characters})

    @property
    def n_characters(self) -> int:
        return len(self.characters)


def load_omniglot(subset: str, data_dir: str | os.PathLike | None = None, preprocessing: str = "paper",
                  cache_dir: str | os.PathLike | None = None, progress: bool = False) -> OmniglotImages:
    """Decode (or load from the cache) one Omniglot archive.

    Args:
        subset: ``"background"`` (30 alphabets, 964 characters) or ``"evaluation"`` (20, 659).
        data_dir: folder with the zips or extracted folders (see :func:`resolve_data_dir`).
        preprocessing: ``"paper"`` or ``"classic"`` (module docstring).
        cache_dir: where decoded arrays are cached (see :func:`resolve_cache_dir`).
        progress: show a progress bar while decoding.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown Omniglot subset {subset!r}; expected one of {SUBSETS}")
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"unknown preprocessing {preprocessing!r}; expected one of {PREPROCESSINGS}")
    ddir = resolve_data_dir(data_dir)
    if not ddir.is_dir():
        raise OmniglotDataError(_missing_message(ddir, f"images_{subset}.zip"))
    src = _source(ddir, subset)
    key = _fingerprint(src)
    cdir = resolve_cache_dir(cache_dir)
    npy = cdir / f"omniglot_{subset}_{preprocessing}_{key}.npy"
    meta = cdir / f"omniglot_{subset}_{key}.json"
    if npy.is_file() and meta.is_file():
        try:
            images = np.load(npy, allow_pickle=False)
            characters = json.loads(meta.read_text())["characters"]
            if images.shape == (len(characters), N_DRAWINGS, IMAGE_SIZE, IMAGE_SIZE):
                return OmniglotImages(images, characters, subset, preprocessing)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: decode again and overwrite it
    entries = _list_entries(src)
    if not entries:
        raise OmniglotDataError(f"{src} holds no Omniglot images (<Alphabet>/characterNN/*.png); "
                                + _missing_message(ddir, f"images_{subset}.zip"))
    characters = _characters(src, entries)
    raw = _decode(src, entries, progress)
    images = _resize(raw, preprocessing).reshape(len(characters), N_DRAWINGS, IMAGE_SIZE, IMAGE_SIZE)
    try:
        atomic_write(npy, lambda f: np.save(f, images, allow_pickle=False))
        atomic_write(meta, lambda f: f.write(json.dumps({"characters": characters}).encode()))
    except OSError:
        pass  # a read-only cache only costs time
    return OmniglotImages(images, characters, subset, preprocessing)
