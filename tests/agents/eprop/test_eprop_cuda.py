"""Meta-training of the spiking learner on a CUDA device: the captured-graph iteration against the eager one.

Skipped without a GPU (CI has none); run on a GPU machine with
``python -m pytest tests/agents/eprop/test_eprop_cuda.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcmeta.agents import eprop

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_graph_needs_cuda(tmp_path):
    with pytest.raises(ValueError, match="CUDA"):
        eprop.meta_train(tmp_path, 1, batch=1, device="cpu", cuda_graph=True, progress=False)


@cuda
@pytest.mark.parametrize("opts", [{}, {"voltage_reg": 1e-3, "threshold_gradient": True, "best_window": 2}],
                         ids=["default", "vreg-thrgrad"])
def test_cuda_graph_meta_train_matches_eager(tmp_path, opts):
    """Same seed, same batches: the graph replay gives the eager loop's losses and weights (also with the
    voltage regularisation's max-pool/where ops and the threshold gradient in the captured graph)."""
    kw = dict(batch=8, checkpoint_every=2, seed=3, device="cuda", progress=False, **opts)
    a = eprop.meta_train(tmp_path / "eager", 4, cuda_graph=False, **kw)
    b = eprop.meta_train(tmp_path / "graph", 4, cuda_graph=True, **kw)
    assert b["cuda_graph"] and not a["cuda_graph"]
    la = np.array([h["loss"] for h in a["history"]])
    lb = np.array([h["loss"] for h in b["history"]])
    assert [h["iteration"] for h in b["history"]] == [0, 1, 2, 3]
    np.testing.assert_allclose(lb[0], la[0], rtol=1e-5)  # first iteration: same weights, same batch
    np.testing.assert_allclose(lb, la, rtol=2e-2)  # later ones through Adam steps (spikes may flip)
    wa, wb = np.load(a["weights"]), np.load(b["weights"])
    for k in eprop.PARAM_KEYS:
        rel = np.linalg.norm(wa[k] - wb[k]) / np.linalg.norm(wa[k])
        assert rel < 1e-2, (k, rel)


@cuda
def test_cuda_graph_resume_and_time_limit(tmp_path):
    """A time-limited run stops with a checkpoint; --resume continues to the end with the graph path."""
    r = eprop.meta_train(tmp_path, 50, batch=4, checkpoint_every=1000, device="cuda", progress=False,
                       time_limit_s=0.0)
    assert r["iteration"] == 0
    r = eprop.meta_train(tmp_path, 3, batch=4, checkpoint_every=1000, device="cuda", progress=False)
    assert r["iteration"] == 3 and (tmp_path / "checkpoint.pt").is_file()
    r = eprop.meta_train(tmp_path, 5, batch=4, checkpoint_every=1000, device="cuda", progress=False, resume=True)
    assert r["iteration"] == 5 and [h["iteration"] for h in r["history"]] == [0, 1, 2, 3, 4]


def test_train_cli_rejects_bad_device_and_limits(tmp_path, capsys):
    from pcmeta.demos.cli import main

    base = ["arm", "train", "--out", str(tmp_path), "--iterations", "1", "--batch", "1"]
    assert main(base + ["--device", "nonsense"]) == 2
    assert "not a torch device" in capsys.readouterr().err
    assert main(base + ["--max-minutes", "0"]) == 2
    assert "--max-minutes must be > 0" in capsys.readouterr().err
    assert main(base + ["--clip-grad-norm", "-1"]) == 2
    assert "--clip-grad-norm must be > 0" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(base + ["--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint.pt").exists()
