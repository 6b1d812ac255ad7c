"""Omniglot loading, preprocessing, caching, download errors, splits and the task sampler."""
from __future__ import annotations

import io
import os
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcmeta.tasks import omniglot as og
from pcmeta.tasks import omniglot_files as ogf


# ------------------------------------------------------------------------------- real data
def test_counts_of_the_official_archives(omniglot_dir):
    for subset, (n_alpha, n_char) in og.EXPECTED_COUNTS.items():
        d = og.load_omniglot(subset, omniglot_dir)
        assert len(d.alphabets) == n_alpha
        assert d.n_characters == n_char
        assert d.images.shape == (n_char, 20, 28, 28)
        assert d.images.dtype == np.float32
        assert 0.0 <= d.images.min() and d.images.max() <= 1.0


def test_paper_preprocessing_keeps_ink_dark_classic_inverts(omniglot_dir):
    paper = og.load_omniglot("evaluation", omniglot_dir, "paper").images
    classic = og.load_omniglot("evaluation", omniglot_dir, "classic").images
    assert paper.mean() > 0.8  # mostly white background, ink = 0
    assert classic.mean() < 0.2  # inverted: ink = 1
    # same drawings: dark in one is bright in the other
    assert np.corrcoef(paper[:20].ravel(), classic[:20].ravel())[0, 1] < -0.8


def test_paper_resize_is_half_pixel_bilinear(omniglot_dir):
    """TensorFlow 2 bilinear (half-pixel centres, no antialias), checked against a direct formula."""
    with zipfile.ZipFile(omniglot_dir / "images_evaluation.zip") as zf:
        name = sorted(n for n in zf.namelist() if n.endswith(".png"))[0]
        raw = np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("L")) > 127
    got = ogf._resize(raw[None], "paper")[0]
    src = raw.astype(np.float64)
    scale = 105 / 28
    c = np.clip((np.arange(28) + 0.5) * scale - 0.5, 0, None)
    i0 = np.floor(c).astype(int)
    i1 = np.minimum(i0 + 1, 104)
    w = c - i0
    rows = src[i0] * (1 - w)[:, None] + src[i1] * w[:, None]
    want = rows[:, i0] * (1 - w)[None] + rows[:, i1] * w[None]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_classic_split_is_a_fixed_partition(omniglot_dir):
    parts = {p: og.class_pool("classic", p, omniglot_dir) for p in og.PARTS}
    sizes = {p: len(v.characters) for p, v in parts.items()}
    assert sizes == {"train": 1100, "val": 100, "test": 423}
    names = [set(v.characters) for v in parts.values()]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert len(names[0] | names[1] | names[2]) == 1623
    assert parts["train"].n_classes == 4400  # rotations are classes of their own
    assert og.class_pool("classic", "test", omniglot_dir).characters == parts["test"].characters


def test_paper_split_uses_background_for_training(omniglot_dir):
    tr = og.class_pool("paper", "train", omniglot_dir)
    te = og.class_pool("paper", "test", omniglot_dir)
    assert (len(tr.characters), len(te.characters)) == (964, 659)
    assert tr.rotation == "augment" and te.rotation == "none"


def test_sampler_shapes_distinct_classes_and_drawings(omniglot_dir):
    pool = og.class_pool("paper", "test", omniglot_dir)
    b = og.TaskSampler(pool, 5, 3, 4, seed=1).sample(16)
    assert b.support_x.shape == (16, 15, 1, 28, 28) and b.query_x.shape == (16, 20, 1, 28, 28)
    assert b.support_y.shape == (16, 15) and b.query_y.shape == (16, 20)
    assert b.support_y.dtype == np.int64
    np.testing.assert_array_equal(b.support_y[0], np.repeat(np.arange(5), 3))
    for t in range(16):
        assert len(set(b.classes[t])) == 5
        for c in range(5):
            assert len(set(b.drawings[t, c])) == 7
    # the images are the pool's drawings
    np.testing.assert_array_equal(b.support_x[3, 4, 0], pool.images[b.classes[3, 1], b.drawings[3, 1, 1]])
    np.testing.assert_array_equal(b.query_x[3, 0, 0], pool.images[b.classes[3, 0], b.drawings[3, 0, 3]])


def test_sampler_is_seeded_and_state_restorable(omniglot_dir):
    pool = og.class_pool("paper", "train", omniglot_dir)
    a = og.TaskSampler(pool, 5, 1, 1, seed=7)
    b = og.TaskSampler(pool, 5, 1, 1, seed=7)
    np.testing.assert_array_equal(a.sample(4).support_x, b.sample(4).support_x)
    state = a.get_state()
    x1 = a.sample(4).query_x
    a.set_state(state)
    np.testing.assert_array_equal(a.sample(4).query_x, x1)
    assert not np.array_equal(og.TaskSampler(pool, 5, 1, 1, seed=8).sample(4).support_x, b.sample(4).support_x)


def test_rotation_augmentation_rotates_whole_classes(omniglot_dir):
    pool = og.class_pool("paper", "train", omniglot_dir)
    b = og.TaskSampler(pool, 5, 2, 1, seed=3).sample(8)
    assert set(np.unique(b.rotations)) <= {0, 90, 180, 270} and len(np.unique(b.rotations)) > 1
    for t in range(8):
        for c in range(5):
            k = b.rotations[t, c] // 90
            for j in range(2):
                orig = pool.images[b.classes[t, c], b.drawings[t, c, j]]
                np.testing.assert_array_equal(b.support_x[t, c * 2 + j, 0], np.rot90(orig, k))


def test_sampler_rejects_bad_arguments(omniglot_dir):
    pool = og.class_pool("paper", "test", omniglot_dir)
    with pytest.raises(ValueError, match="k_shot \\+ n_query"):
        og.TaskSampler(pool, 5, 15, 6)
    with pytest.raises(ValueError, match="n_way"):
        og.TaskSampler(pool, 0, 1, 1)
    with pytest.raises(ValueError, match="exceeds"):
        og.TaskSampler(pool, 700, 1, 1)
    with pytest.raises(ValueError, match="unknown split"):
        og.class_pool("nope", "train", pool)
    with pytest.raises(ValueError, match="unknown part"):
        og.class_pool("paper", "dev")


# ------------------------------------------------------------------------------- synthetic archives
def _fake_zip(path: Path, subset: str, n_alpha: int = 2, n_char: int = 2, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for a in range(n_alpha):
            for c in range(n_char):
                for d in range(20):
                    img = Image.fromarray(rng.random((105, 105)) > 0.1).convert("1")
                    buf = io.BytesIO()
                    img.save(buf, format="PNG")
                    zf.writestr(f"images_{subset}/Alpha{a}/character{c + 1:02d}/{a}{c}_{d + 1:02d}.png",
                                buf.getvalue())


def test_cache_is_written_and_reused(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    _fake_zip(data / "images_background.zip", "background")
    first = og.load_omniglot("background", data, cache_dir=cache)
    assert first.images.shape == (4, 20, 28, 28)
    assert len(list(cache.glob("*.npy"))) == 1
    monkeypatch.setattr(ogf, "_decode", lambda *a, **k: pytest.fail("decoded again instead of using the cache"))
    second = og.load_omniglot("background", data, cache_dir=cache)
    np.testing.assert_array_equal(first.images, second.images)
    assert second.characters == ["Alpha0/character01", "Alpha0/character02", "Alpha1/character01",
                                 "Alpha1/character02"]


def test_extracted_folder_equals_zip(tmp_path):
    zdir, fdir = tmp_path / "z", tmp_path / "f"
    zdir.mkdir()
    fdir.mkdir()
    _fake_zip(zdir / "images_evaluation.zip", "evaluation")
    with zipfile.ZipFile(zdir / "images_evaluation.zip") as zf:
        zf.extractall(fdir)
    a = og.load_omniglot("evaluation", zdir, cache_dir=tmp_path / "c1")
    b = og.load_omniglot("evaluation", fdir, cache_dir=tmp_path / "c2")
    np.testing.assert_array_equal(a.images, b.images)


def test_corrupted_zip_gives_clear_error(tmp_path, omniglot_dir):
    # truncated archive: the zip directory is gone
    blob = (omniglot_dir / "images_evaluation.zip").read_bytes()
    (tmp_path / "images_evaluation.zip").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(og.OmniglotDataError, match="images_evaluation.zip"):
        og.load_omniglot("evaluation", tmp_path, cache_dir=tmp_path / "cache")
    # intact directory, damaged member data (CRC mismatch)
    d2 = tmp_path / "crc"
    d2.mkdir()
    _fake_zip(d2 / "images_background.zip", "background")
    raw = bytearray((d2 / "images_background.zip").read_bytes())
    for i in range(200, 3000, 7):
        raw[i] ^= 0xFF
    (d2 / "images_background.zip").write_bytes(bytes(raw))
    with pytest.raises(og.OmniglotDataError, match="(corrupted|not a readable)"):
        og.load_omniglot("background", d2, cache_dir=tmp_path / "cache2")


def test_missing_data_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(og.OmniglotDataError, match="images_background.zip.*pcmeta data omniglot"):
        og.load_omniglot("background", tmp_path)
    with pytest.raises(ValueError, match="unknown Omniglot subset"):
        og.load_omniglot("train", tmp_path)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        og.load_omniglot("background", tmp_path, preprocessing="nearest")


def test_data_layer_names_stay_importable_from_omniglot():
    for name in ("OFFICIAL_MD5", "OFFICIAL_URL", "SUBSETS", "PREPROCESSINGS", "IMAGE_SIZE", "N_DRAWINGS",
                 "EXPECTED_COUNTS", "OmniglotDataError", "OmniglotImages", "download", "load_omniglot",
                 "resolve_data_dir", "resolve_cache_dir"):
        assert getattr(og, name) is getattr(ogf, name), name


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("PCMETA_DATA_DIR", str(tmp_path))
    assert og.resolve_data_dir() == tmp_path
    assert og.resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("PCMETA_DATA_DIR")
    assert og.resolve_data_dir().parts[-2:] == ("pcmeta", "omniglot")


class _FakeResponse(io.BytesIO):
    headers: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_offline_and_checksum_mismatch_leave_nothing(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(ogf.urllib.request, "urlopen", offline)
    with pytest.raises(og.OmniglotDataError, match="images_background.zip"):
        og.download(tmp_path, progress=False)
    assert os.listdir(tmp_path) == []

    monkeypatch.setattr(ogf.urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(b"not omniglot"))
    with pytest.raises(og.OmniglotDataError, match="checksum mismatch"):
        og.download(tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


def test_download_keeps_a_verified_file(tmp_path, monkeypatch):
    payload = b"pretend zip"
    import hashlib

    monkeypatch.setattr(ogf, "OFFICIAL_MD5", {"images_background.zip": hashlib.md5(payload).hexdigest()})
    monkeypatch.setattr(ogf.urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(payload))
    og.download(tmp_path, progress=False)
    assert (tmp_path / "images_background.zip").read_bytes() == payload
    assert sorted(os.listdir(tmp_path)) == ["images_background.zip"]


def test_cli_data_offline_error_and_present_data(tmp_path, monkeypatch, omniglot_dir, capsys):
    from pcmeta.demos.cli import main

    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(ogf.urllib.request, "urlopen", offline)
    assert main(["data", "omniglot", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "images_background.zip" in err and str(tmp_path) in err
    assert os.listdir(tmp_path) == []
    # present data is not downloaded again (even offline), only counted
    assert main(["data", "omniglot", "--data-dir", str(omniglot_dir)]) == 0
    assert "30 alphabets, 964 characters" in capsys.readouterr().out
