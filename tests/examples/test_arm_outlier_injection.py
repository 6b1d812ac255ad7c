"""examples/arm_outlier_injection.py: the outlier reaches the step unclipped in one copy, is cut to 3x the
median norm in another and skipped in the third, and the run folder it reads is left as it was."""

import pytest

from pcmeta.agents import eprop
from pcmeta.agents.eprop.checkpoints import read_history




def test_outlier_injection_continues_three_copies(tmp_path, capsys, load_example):
    run = tmp_path / "run"
    eprop.meta_train(run, 12, batch=1, checkpoint_every=6, seed=1, progress=False)
    before = (run / "checkpoint.pt").read_bytes()
    mod = load_example("arm_outlier_injection")
    assert mod.main(["--run", str(run), "--out", str(tmp_path / "out"), "--iterations", "21"]) == 0
    assert (run / "checkpoint.pt").read_bytes() == before
    noclip = read_history(tmp_path / "out" / "noclip" / "history.csv")
    clip = read_history(tmp_path / "out" / "clip" / "history.csv")
    assert [h["iteration"] for h in clip] == list(range(33))
    own = [h["grad_norm"] for h in read_history(run / "history.csv")]
    # the logged norm at the outlier is 35x what the run would have had; both copies start from the same state
    assert noclip[12]["grad_norm"] == pytest.approx(clip[12]["grad_norm"], rel=1e-6)
    assert noclip[12]["grad_norm"] > 5 * max(own[2:])
    assert noclip[13]["loss"] != clip[13]["loss"]  # the clip cut the outlier in one copy only
    skip = read_history(tmp_path / "out" / "skip" / "history.csv")
    assert skip[12]["grad_norm"] == pytest.approx(clip[12]["grad_norm"], rel=1e-6)
    assert skip[13]["loss"] not in (clip[13]["loss"], noclip[13]["loss"])  # no step at all after the outlier
    out = capsys.readouterr().out
    assert "x35 outlier, no clip" in out and "relative clip 3 |" in out and "clip 3 + skip 10 (default)" in out
    with pytest.raises(SystemExit):
        mod.main(["--run", str(run), "--out", str(tmp_path / "o2"), "--iterations", "5"])
