"""pcmeta.files: atomic writes leave the old file or the new one, never a half-written or temporary file."""
import json

import numpy as np
import pytest

from pcmeta.files import atomic_write, clean_temporaries, file_sha256, save_npz, write_json


def test_write_json_creates_parents_and_converts_numpy(tmp_path):
    p = write_json(tmp_path / "a" / "b" / "r.json", {"x": np.float32(0.5), "y": np.arange(3), "p": tmp_path})
    assert json.loads(p.read_text()) == {"x": 0.5, "y": [0, 1, 2], "p": str(tmp_path)}


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    p = write_json(tmp_path / "r.json", {"v": 1})

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert json.loads(p.read_text()) == {"v": 1}
    assert list(tmp_path.iterdir()) == [p]


def test_unserialisable_value_raises_and_writes_nothing(tmp_path):
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(tmp_path / "r.json", {"v": object()})
    assert list(tmp_path.iterdir()) == []


def test_clean_temporaries_and_npz(tmp_path):
    (tmp_path / ".w.npz.abc.pcmeta-tmp").write_bytes(b"x")
    save_npz(tmp_path / "w.npz", {"a": np.ones(2)})
    assert [p.name for p in clean_temporaries(tmp_path)] == [".w.npz.abc.pcmeta-tmp"]
    assert np.load(tmp_path / "w.npz")["a"].tolist() == [1.0, 1.0]


def test_file_sha256_is_the_content_hash_and_follows_a_rewritten_file(tmp_path):
    import hashlib

    f = tmp_path / "w.npz"
    f.write_bytes(b"first")
    assert file_sha256(f) == hashlib.sha256(b"first").hexdigest() == file_sha256(str(f))
    f.write_bytes(b"second, longer")  # a replaced weights file: read again, not the cached hash
    assert file_sha256(f) == hashlib.sha256(b"second, longer").hexdigest()
