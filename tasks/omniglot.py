"""Omniglot few-shot tasks: the meta-train/val/test splits and a batched N-way K-shot task sampler.

The images (locating and downloading the official archives, reading, the ``"paper"`` and ``"classic"``
preprocessing to 28 x 28 pixels, and the decoded-image cache) are :mod:`pcmeta.tasks.omniglot_files`,
whose docstring specifies them; every public name of it is importable from this module as well
(:func:`load_omniglot`, :func:`download`, :func:`resolve_data_dir`, :class:`OmniglotDataError`, ...).

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

import json
import os
from dataclasses import dataclass, field

import numpy as np

from pcmeta.tasks.omniglot_files import (  # noqa: F401  (re-exported: the public names of the data layer)
    EXPECTED_COUNTS,
    IMAGE_SIZE,
    N_DRAWINGS,
    OFFICIAL_MD5,
    OFFICIAL_URL,
    PREPROCESSINGS,
    SUBSETS,
    OmniglotDataError,
    OmniglotImages,
    download,
    load_omniglot,
    resolve_cache_dir,
    require_data,
    resolve_data_dir,
)

SPLITS = ("paper", "classic")
PARTS = ("train", "val", "test")
#: Seed of the fixed shuffle of the classic split; sizes of its parts.
CLASSIC_SEED = 1
CLASSIC_SIZES = {"train": 1100, "val": 100, "test": 423}


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
