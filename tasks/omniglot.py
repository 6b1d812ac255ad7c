"""Omniglot few-shot data: reading, preprocessing, caching, splits and a batched task sampler.

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
in the zip directory), so a second run loads in well under a second.

Splits (:func:`class_pool`):

- ``"paper"``: meta-train on the 30 background alphabets (964 characters), meta-test on the 20
  evaluation alphabets (659 characters). During meta-training every sampled class is rotated by a random
  multiple of 90 degrees (all its images alike) as augmentation. There is no separate validation set in
  the paper; the ``"val"`` part is the evaluation alphabets (use it for monitoring only, not selection).
- ``"classic"`` (Finn et al.): all 1623 characters shuffled with a fixed seed; the first 1100 are
  meta-train, the next 100 validation, the last 423 meta-test; each of the four rotations of a character
  is a class of its own (4 x as many classes).

Differences to the authors' loaders, on purpose: the N classes of a task are drawn without replacement
and the query images of a class are drawings distinct from each other and from its support images
(the authors' TensorFlow loader neither guarantees distinct classes nor distinct query drawings).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

#: The two official archives and their md5 sums (brendenlake/omniglot, python/).
OFFICIAL_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
OFFICIAL_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}"
SUBSETS = ("background", "evaluation")
PREPROCESSINGS = ("paper", "classic")
SPLITS = ("paper", "classic")
PARTS = ("train", "val", "test")
IMAGE_SIZE = 28
N_DRAWINGS = 20
#: Expected (alphabets, characters) per archive, checked on load.
EXPECTED_COUNTS = {"background": (30, 964), "evaluation": (20, 659)}
#: Seed of the fixed shuffle of the classic split; sizes of its parts.
CLASSIC_SEED = 1
CLASSIC_SIZES = {"train": 1100, "val": 100, "test": 423}


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


# ----------------------------------------------------------------------------------------- download
def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(data_dir: str | os.PathLike | None = None, *, force: bool = False, timeout_s: float = 60.0,
             progress: bool = True) -> Path:
    """Fetch the official zips into ``data_dir`` (see :func:`resolve_data_dir`) and verify their md5.

    Files already present are kept (and not re-checked: a pixel-identical copy has other checksums)
    unless ``force``. Downloads go to a temporary file in the same folder that is renamed only after
    the md5 matched, so no half-written archive is ever left behind.

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
        url = OFFICIAL_URL.format(name=name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=ddir)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                        total = int(resp.headers.get("Content-Length") or 0) or None
                        bar = None
                        if progress:
                            from tqdm.auto import tqdm

                            bar = tqdm(total=total, unit="B", unit_scale=True, desc=name)
                        while True:
                            chunk = resp.read(1 << 16)
                            if not chunk:
                                break
                            out.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                        if bar is not None:
                            bar.close()
                except (urllib.error.URLError, OSError, TimeoutError) as exc:
                    raise OmniglotDataError(
                        f"could not download {url} ({exc}). Download it by hand and put it at {target}"
                    ) from exc
            got = _md5(Path(tmp))
            if got != md5:
                raise OmniglotDataError(
                    f"checksum mismatch for {url}: md5 {got}, expected {md5}; nothing was kept. "
                    f"Put the official {name} at {target} by hand."
                )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return ddir


# ----------------------------------------------------------------------------------------- decoding
def _list_entries(src: Path) -> list[tuple[str, str, str]]:
    """(alphabet, character, entry) for every PNG, sorted; entry is the zip member or file path."""
    out = []
    if src.is_file():
        try:
            with zipfile.ZipFile(src) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise OmniglotDataError(
                f"{src} is not a readable zip ({exc}); replace it with the official {src.name} "
                f"(`pcmeta data omniglot --force`)"
            ) from exc
        for n in names:
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
        try:
            with zipfile.ZipFile(src) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    h.update(f"{info.filename}:{info.CRC}:{info.file_size}\n".encode())
        except (zipfile.BadZipFile, OSError) as exc:
            raise OmniglotDataError(
                f"{src} is not a readable zip ({exc}); replace it with the official {src.name} "
                f"(`pcmeta data omniglot --force`)"
            ) from exc
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
    raw = _decode(src, entries, progress)
    images = _resize(raw, preprocessing).reshape(len(characters), N_DRAWINGS, IMAGE_SIZE, IMAGE_SIZE)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        _atomic_write(npy, lambda f: np.save(f, images, allow_pickle=False))
        _atomic_write(meta, lambda f: f.write(json.dumps({"characters": characters}).encode()))
    except OSError:
        pass  # a read-only cache only costs time
    return OmniglotImages(images, characters, subset, preprocessing)


def _atomic_write(path: Path, writer) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ----------------------------------------------------------------------------------------- splits
@dataclass
class ClassPool:
    """The characters a task sampler draws classes from.

    Attributes:
        images: (n_characters, 20, 28, 28) float32 in [0, 1].
        characters: names, one per character.
        rotation: ``"none"``, ``"augment"`` (each sampled class rotated by a random k*90 degrees) or
            ``"classes"`` (each of the 4 rotations of a character is its own class).
    """

    images: np.ndarray
    characters: list[str]
    rotation: str = "none"
    split: str = ""
    part: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.characters) * (4 if self.rotation == "classes" else 1)


def class_pool(split: str, part: str, data_dir: str | os.PathLike | None = None,
               preprocessing: str | None = None, cache_dir: str | os.PathLike | None = None,
               augment: bool | None = None) -> ClassPool:
    """The classes of one part (``"train"``, ``"val"``, ``"test"``) of a split (``"paper"``, ``"classic"``).

    ``preprocessing`` defaults to the split's own (``"paper"`` / ``"classic"``). ``augment`` (paper split
    only) defaults to True for ``"train"``: random k*90 degree rotation per sampled class.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    prep = preprocessing or split
    if split == "paper":
        data = load_omniglot("background" if part == "train" else "evaluation", data_dir, prep, cache_dir)
        aug = (part == "train") if augment is None else augment
        return ClassPool(data.images, data.characters, "augment" if aug else "none", split, part)
    bg = load_omniglot("background", data_dir, prep, cache_dir)
    ev = load_omniglot("evaluation", data_dir, prep, cache_dir)
    images = np.concatenate([bg.images, ev.images])
    names = bg.characters + ev.characters
    order = np.random.default_rng(CLASSIC_SEED).permutation(len(names))
    start = {"train": 0, "val": CLASSIC_SIZES["train"],
             "test": CLASSIC_SIZES["train"] + CLASSIC_SIZES["val"]}[part]
    idx = order[start:start + CLASSIC_SIZES[part]]
    return ClassPool(images[idx], [names[i] for i in idx], "classes", split, part)


# ----------------------------------------------------------------------------------------- sampler
@dataclass
class TaskBatch:
    """A batch of N-way K-shot tasks (numpy arrays).

    support_x: (B, N*K, 1, 28, 28) float32; support_y: (B, N*K) int64, class-major (K images of class
    0, then of class 1, ...); query_x: (B, N*Q, 1, 28, 28); query_y: (B, N*Q);
    classes: (B, N) pool class indices; rotations: (B, N) multiples of 90 degrees applied;
    drawings: (B, N, K+Q) drawing indices (first K support, then Q query).
    """

    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    classes: np.ndarray
    rotations: np.ndarray
    drawings: np.ndarray = field(repr=False)

    def torch(self, device=None, dtype=None):
        """(support_x, support_y, query_x, query_y) as torch tensors."""
        import torch

        dt = dtype or torch.float32
        return (torch.as_tensor(self.support_x, device=device, dtype=dt),
                torch.as_tensor(self.support_y, device=device),
                torch.as_tensor(self.query_x, device=device, dtype=dt),
                torch.as_tensor(self.query_y, device=device))


def _rotate_groups(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Rotate x[..., i, j, :, :] by k[i, j] * 90 degrees (counter-clockwise); x (B, N, M, H, W)."""
    out = x.copy()
    for r in (1, 2, 3):
        m = k == r
        if m.any():
            out[m] = np.rot90(x[m], r, axes=(-2, -1))
    return out


class TaskSampler:
    """Draws batches of N-way K-shot tasks from a :class:`ClassPool`, reproducibly.

    Classes are drawn without replacement within a task; the K support and Q query drawings of a class
    are distinct. Labels 0..N-1 follow the random class order, so no label is tied to a character.

    Args:
        pool: the classes to draw from.
        n_way, k_shot, n_query: N, K and Q (queries per class); K + Q <= 20.
        seed: an int or a ``numpy.random.Generator`` (owned by the sampler afterwards).
    """

    def __init__(self, pool: ClassPool, n_way: int, k_shot: int, n_query: int,
                 seed: int | np.random.Generator | None = 0) -> None:
        for name, v in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if k_shot + n_query > N_DRAWINGS:
            raise ValueError(f"k_shot + n_query must be <= {N_DRAWINGS} (drawings per character), got "
                             f"{k_shot} + {n_query}")
        if n_way > pool.n_classes:
            raise ValueError(f"n_way={n_way} exceeds the {pool.n_classes} classes of the pool")
        self.pool, self.n_way, self.k_shot, self.n_query = pool, int(n_way), int(k_shot), int(n_query)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def sample(self, meta_batch: int = 1) -> TaskBatch:
        """Draw ``meta_batch`` independent tasks."""
        if meta_batch < 1:
            raise ValueError(f"meta_batch must be >= 1, got {meta_batch}")
        B, N, K, Q = meta_batch, self.n_way, self.k_shot, self.n_query
        rng, pool = self.rng, self.pool
        classes = np.stack([rng.choice(pool.n_classes, N, replace=False) for _ in range(B)])
        drawings = np.argsort(rng.random((B, N, N_DRAWINGS)), axis=-1)[..., :K + Q]
        if pool.rotation == "augment":
            rot = rng.integers(0, 4, size=(B, N))
        elif pool.rotation == "classes":
            rot = classes % 4
        else:
            rot = np.zeros((B, N), np.int64)
        return self.build(classes, rot * 90, drawings)

    def build(self, classes, rotations, drawings) -> TaskBatch:
        """The images of tasks given by their description.

        Args:
            classes: (B, N) pool class indices (distinct within a task).
            rotations: (B, N) degrees, multiples of 90 (for a ``"classes"`` pool: must be 90 * (class % 4)).
            drawings: (B, N, K+Q) drawing indices in 0..19, distinct within a class; first K support.
        """
        classes = np.asarray(classes, np.int64)
        rotations = np.asarray(rotations, np.int64)
        drawings = np.asarray(drawings, np.int64)
        if classes.ndim == 1:
            classes, rotations, drawings = classes[None], rotations[None], drawings[None]
        B, N = classes.shape
        K, Q = self.k_shot, self.n_query
        if N != self.n_way or drawings.shape != (B, N, K + Q) or rotations.shape != (B, N):
            raise ValueError(f"task description does not fit a {self.n_way}-way {K}-shot {Q}-query task: "
                             f"classes {classes.shape}, rotations {rotations.shape}, drawings {drawings.shape}")
        if classes.min() < 0 or classes.max() >= self.pool.n_classes:
            raise ValueError(f"class indices must be in [0, {self.pool.n_classes})")
        if drawings.min() < 0 or drawings.max() >= N_DRAWINGS:
            raise ValueError(f"drawing indices must be in [0, {N_DRAWINGS})")
        if np.any(rotations % 90):
            raise ValueError("rotations must be multiples of 90 degrees")
        rot = (rotations // 90) % 4
        chars = classes // 4 if self.pool.rotation == "classes" else classes
        x = self.pool.images[chars[:, :, None], drawings]  # (B, N, K+Q, 28, 28)
        if rot.any():
            x = _rotate_groups(x, rot)
        sx = x[:, :, :K].reshape(B, N * K, 1, IMAGE_SIZE, IMAGE_SIZE)
        qx = x[:, :, K:].reshape(B, N * Q, 1, IMAGE_SIZE, IMAGE_SIZE)
        sy = np.broadcast_to(np.repeat(np.arange(N), K), (B, N * K)).astype(np.int64)
        qy = np.broadcast_to(np.repeat(np.arange(N), Q), (B, N * Q)).astype(np.int64)
        return TaskBatch(np.ascontiguousarray(sx), sy.copy(), np.ascontiguousarray(qx), qy.copy(),
                         classes, rot * 90, drawings)

    # reproducible state for checkpoints
    def get_state(self) -> str:
        """The generator state as a JSON string (for checkpoints)."""
        return json.dumps(self.rng.bit_generator.state)

    def set_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)
