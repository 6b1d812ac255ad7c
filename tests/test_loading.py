"""Every weights / checkpoint file pcmeta reads goes through pcmeta.files (load_arrays / read_npz + check_arrays,
load_checkpoint): a bad file of either agent (truncated, empty, bit-flipped, random bytes, a missing or unexpected
key, a wrong shape, NaN, inf, a complex / object / integer dtype, the wrong container) raises ONE error type,
WeightsFileError, naming the file; through the CLI it is one ``pcmeta: error:`` line, exit 2. The shipped and the
authors' released weights load exactly as a plain ``np.load`` reads them. Numeric CLI flags are range-checked."""
from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pcmeta.agents import eprop
from pcmeta.agents.maml import MAML, MAMLConfig, load_weights, matrix_from_kernel, params_from_released
from pcmeta.agents.shipped import WEIGHTS_DIR, shipped_names
from pcmeta.demos import options
from pcmeta.demos.cli import build_parser, main
from pcmeta.files import TEXT, WeightsFileError, check_arrays, load_arrays, load_checkpoint, read_npz

SHIPPED = {"maml": WEIGHTS_DIR / "paper_5w5s.npz", "arm": WEIGHTS_DIR / "arm_eprop.npz"}


# ---------------------------------------------------------------------------------------------- bad files
def _flip_in_largest_member(raw: bytes, path: Path) -> bytes:
    """``raw`` (a zip) with one bit flipped in the middle of its largest member's data."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    b = bytearray(raw)
    b[at] ^= 0x10
    return bytes(b)


def _bad_container(case: str, good: Path, out: Path) -> str:
    """Write the format-level bad file ``case`` made from ``good`` to ``out``; returns words of the message."""
    raw = good.read_bytes()
    if case == "truncated":
        out.write_bytes(raw[: len(raw) // 2])
        return "truncated"
    if case == "empty":
        out.write_bytes(b"")
        return "empty"
    if case == "bitflip":
        out.write_bytes(_flip_in_largest_member(raw, good))
        return "CRC-32"
    if case == "random":
        out.write_bytes(np.random.default_rng(0).bytes(4096))
        return "starts with"
    raise AssertionError(case)


CONTAINER_CASES = ["truncated", "empty", "bitflip", "random"]
#: content-level cases: (name, how to change the arrays, words of the message)
CONTENT_CASES = {
    "missing": (lambda d, k: d.pop(k), "lacks"),
    "extra": (lambda d, k: d.__setitem__("unexpected_key", d[k]), "unexpected"),
    "shape": (lambda d, k: d.__setitem__(k, d[k][..., :-1]), "shape"),
    "ndim": (lambda d, k: d.__setitem__(k, d[k].reshape(-1)), "shape"),
    "nan": (lambda d, k: d[k].__setitem__((0,) * d[k].ndim, float("nan")), "1 NaN"),
    "inf": (lambda d, k: d[k].__setitem__((-1,) * d[k].ndim, -float("inf")), "1 infinite"),
    "complex": (lambda d, k: d.__setitem__(k, d[k].astype(np.complex64)), "complex64"),
    "int": (lambda d, k: d.__setitem__(k, d[k].astype(np.int32)), "int32"),
}


def _load_npz(family: str, path):
    return MAML.from_weights(path) if family == "maml" else eprop.load_weights(path)


def _load_pt(family: str, path):
    return MAML.from_checkpoint(path) if family == "maml" else eprop.load_checkpoint_params(path)


def _good_checkpoint(family: str, path: Path) -> dict:
    if family == "maml":
        m = MAML.from_weights(None)
        ck = {"config": m.cfg.to_dict(), "params": {k: v.detach().clone() for k, v in m.params.items()},
              "iteration": 1}
    else:
        ck = {"params": eprop.load_weights(None), "history": [], "iteration": 0}
    torch.save(ck, path)
    return ck


def _key(family: str) -> str:
    return {"maml": "kernel2", "arm": "W_rec_lsg"}[family]


def _assert_names_file(exc: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    msg = str(exc.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("family", ["maml", "arm"])
@pytest.mark.parametrize("case", CONTAINER_CASES)
def test_damaged_npz_is_one_error_naming_the_file(family, case, tmp_path):
    bad = tmp_path / f"{case}.npz"
    words = _bad_container(case, SHIPPED[family], bad)
    with pytest.raises(WeightsFileError) as exc:
        _load_npz(family, bad)
    _assert_names_file(exc, bad, words, "expected")


@pytest.mark.parametrize("family", ["maml", "arm"])
@pytest.mark.parametrize("case", list(CONTENT_CASES))
def test_npz_that_does_not_fit_the_model_is_one_error_naming_the_file(family, case, tmp_path):
    d = dict(np.load(SHIPPED[family]))
    change, words = CONTENT_CASES[case]
    change(d, _key(family))
    bad = tmp_path / f"{case}.npz"
    np.savez(bad, **d)
    with pytest.raises(WeightsFileError) as exc:
        _load_npz(family, bad)
    _assert_names_file(exc, bad, words, "expected")


@pytest.mark.parametrize("family", ["maml", "arm"])
def test_object_arrays_and_torch_files_are_refused(family, tmp_path):
    d = dict(np.load(SHIPPED[family]))
    d[_key(family)] = d[_key(family)].astype(object)
    bad = tmp_path / "object.npz"
    np.savez(bad, **d)
    with pytest.raises(WeightsFileError) as exc:
        _load_npz(family, bad)
    _assert_names_file(exc, bad, "pickled")
    pt = tmp_path / "checkpoint.npz"  # a torch checkpoint under an .npz name
    _good_checkpoint(family, pt)
    with pytest.raises(WeightsFileError) as exc:
        _load_npz(family, pt)
    _assert_names_file(exc, pt, "torch checkpoint")
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3, np.float32))
    with pytest.raises(WeightsFileError, match="single .npy"):
        _load_npz(family, npy)


def test_the_other_agents_weights_are_refused_with_both_layouts():
    with pytest.raises(WeightsFileError, match="neither MAML layout"):
        MAML.from_weights(SHIPPED["arm"])
    with pytest.raises(WeightsFileError, match="lacks the keys W_in_lsg"):
        eprop.load_weights(SHIPPED["maml"])


@pytest.mark.parametrize("family", ["maml", "arm"])
@pytest.mark.parametrize("case", CONTAINER_CASES)
def test_damaged_checkpoint_is_one_error_naming_the_file(family, case, tmp_path):
    good = tmp_path / "good.pt"
    _good_checkpoint(family, good)
    _load_pt(family, good)  # the good one loads
    bad = tmp_path / f"{case}.pt"
    words = _bad_container(case, good, bad)
    with pytest.raises(WeightsFileError) as exc:
        _load_pt(family, bad)
    _assert_names_file(exc, bad, words, "expected")


@pytest.mark.parametrize("family", ["maml", "arm"])
@pytest.mark.parametrize("case", ["missing", "extra", "shape", "nan", "inf", "complex", "int"])
def test_checkpoint_params_that_do_not_fit_are_one_error(family, case, tmp_path):
    ck = _good_checkpoint(family, tmp_path / "good.pt")
    change, words = CONTENT_CASES[case]
    key = {"maml": "conv2", "arm": "W_rec_lsg"}[family]
    params = {k: v.numpy().copy() for k, v in ck["params"].items()}
    change(params, key)
    ck["params"] = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    bad = tmp_path / f"{case}.pt"
    torch.save(ck, bad)
    with pytest.raises(WeightsFileError) as exc:
        _load_pt(family, bad)
    _assert_names_file(exc, bad, words, "params[")


@pytest.mark.parametrize("family", ["maml", "arm"])
def test_checkpoint_container_problems(family, tmp_path):
    ck = _good_checkpoint(family, tmp_path / "good.pt")
    torch.save({k: v for k, v in ck.items() if k != "params"}, tmp_path / "noparams.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name, words in (("noparams.pt", "lacks params"), ("tensor.pt", "not a dict")):
        with pytest.raises(WeightsFileError) as exc:
            _load_pt(family, tmp_path / name)
        _assert_names_file(exc, tmp_path / name, words)
    with pytest.raises(WeightsFileError, match=r"\.npz archive \(numpy.savez\), not a torch checkpoint"):
        _load_pt(family, SHIPPED[family])
    with pytest.raises(FileNotFoundError, match="not found"):
        _load_pt(family, tmp_path / "nonesuch.pt")


def test_maml_checkpoint_with_a_bad_config(tmp_path):
    ck = _good_checkpoint("maml", tmp_path / "good.pt")
    ck["config"] = {**ck["config"], "arch": "resnet"}
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(WeightsFileError, match="config is not a valid MAML config.*unknown arch"):
        MAML.from_checkpoint(tmp_path / "bad.pt")


def test_maml_stored_config_must_fit_the_arrays(tmp_path):
    d = dict(np.load(SHIPPED["maml"]))
    d["config_json"] = np.array('{"channels": 64}')
    np.savez(tmp_path / "c64.npz", **d)
    with pytest.raises(WeightsFileError, match=r"kernel1 has shape \(3, 3, 1, 56\).*C = 64"):
        load_weights(tmp_path / "c64.npz")
    d["config_json"] = np.array("{not json")
    np.savez(tmp_path / "json.npz", **d)
    with pytest.raises(WeightsFileError, match="config_json is not valid JSON"):
        load_weights(tmp_path / "json.npz")
    d["config_json"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "text.npz", **d)
    with pytest.raises(WeightsFileError, match="config_json is a float32 array"):
        load_weights(tmp_path / "text.npz")


def test_a_folder_is_not_a_weights_file(tmp_path):
    with pytest.raises(WeightsFileError, match="not a regular file"):
        load_arrays(tmp_path, {})
    with pytest.raises(WeightsFileError, match="not a regular file"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------- the good files, unchanged
def _released_the_old_way(path: Path, dtype) -> dict:
    with np.load(path) as d:
        p = {k: matrix_from_kernel(torch.as_tensor(d[f"kernel{i}"]).permute(3, 2, 0, 1)).to(dtype)
             for i, k in enumerate(("conv1", "conv2", "conv3", "conv4"), start=1)}
        p["readout"] = torch.as_tensor(d["kernel5"]).to(dtype)
    return p


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shipped_and_released_maml_weights_load_as_before(reference_dir, dtype):
    for name in [n for n in shipped_names() if not n.startswith("arm")]:
        path = WEIGHTS_DIR / f"{name}.npz"
        with np.load(path) as d:
            if "kernel1" in d:
                old = _released_the_old_way(path, dtype)
            else:
                old = {k: torch.as_tensor(d[k]).to(dtype) for k in d.files if k != "config_json"}
        params, cfg = load_weights(path, dtype)
        assert _same(params, old), name
        assert cfg is not None and cfg.n_way == params["readout"].shape[1]
    authors = reference_dir / "authors_omniglot_maml.npz"
    old = _released_the_old_way(authors, dtype)
    assert _same(params_from_released(authors, dtype), old)
    params, cfg = load_weights(authors, dtype)
    assert _same(params, old) and cfg == MAMLConfig(channels=56, n_way=5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shipped_and_released_arm_weights_load_as_before(reference_dir, monkeypatch, dtype):
    monkeypatch.setenv("PCMETA_REFERENCE_DIR", str(reference_dir))
    for name, path in ((None, SHIPPED["arm"]), ("authors", reference_dir / "authors_arm_natural_eprop.npz")):
        with np.load(path) as d:
            old = {k: torch.as_tensor(np.asarray(d[k]), dtype=dtype) for k in eprop.PARAM_KEYS}
        assert _same(eprop.load_weights(name, dtype=dtype), old)
        assert _same(eprop.load_weights(path, dtype=dtype), old)


def test_a_checkpoint_loads_its_params_exactly(tmp_path):
    for family in ("maml", "arm"):
        ck = _good_checkpoint(family, tmp_path / f"{family}.pt")
        if family == "maml":
            m = MAML.from_checkpoint(tmp_path / "maml.pt")
            assert m.cfg.to_dict() == ck["config"]
            assert all(torch.equal(m.params[k].detach(), v) for k, v in ck["params"].items())
        else:
            assert _same(eprop.load_checkpoint_params(tmp_path / "arm.pt"), ck["params"])


# ------------------------------------------------------------------------------------ files.check_arrays
def test_check_arrays_named_sizes_text_and_tensors(tmp_path):
    spec = {"a": (3, "C"), "b": ("2*C", None), "t": TEXT}
    ok = {"a": np.zeros((3, 4), np.float32), "b": torch.zeros(8, 1, dtype=torch.float64), "t": np.array("x")}
    assert check_arrays(ok, spec, path="f") == {"C": 4}
    with pytest.raises(WeightsFileError,
                       match=r"b has shape \(6, 1\); expected shape \(2\*C, \*\) = \(8, \*\) \(C = 4\)"):
        check_arrays({**ok, "b": np.zeros((6, 1))}, spec, path="f")
    with pytest.raises(WeightsFileError, match="C = 5"):
        check_arrays(ok, spec, path="f", dims={"C": 5})
    with pytest.raises(WeightsFileError, match="t is a float64 array"):
        check_arrays({**ok, "t": np.zeros(1)}, spec, path="f")
    with pytest.raises(WeightsFileError, match="a is a list, not an array"):
        check_arrays({**ok, "a": [1.0]}, spec, path="f")
    assert check_arrays({"a": ok["a"]}, {"a": None}, path="f", optional={"t": TEXT}) == {}
    with pytest.raises(WeightsFileError, match="dtype float128"):  # torch has no wider float
        check_arrays({"a": np.zeros(2, np.longdouble)}, {"a": None}, path="f")
    p = tmp_path / "big_endian.npz"
    np.savez(p, a=np.arange(3, dtype=">f4"))
    a = read_npz(p)["a"]
    assert a.dtype.isnative and torch.equal(torch.as_tensor(a), torch.arange(3.0))


# --------------------------------------------------------------------------------------------------- CLI
def _bad_weights(tmp_path: Path, family: str) -> Path:
    d = dict(np.load(SHIPPED[family]))
    d[_key(family)] = np.full_like(d[_key(family)], np.nan)
    p = tmp_path / f"{family}_nan.npz"
    np.savez(p, **d)
    return p


def _bad_checkpoint(tmp_path: Path, family: str) -> Path:
    good = tmp_path / f"{family}_good.pt"
    _good_checkpoint(family, good)
    p = tmp_path / f"{family}_truncated.pt"
    p.write_bytes(good.read_bytes()[:1000])
    return p


@pytest.mark.parametrize("how", [
    ("omniglot", "maml", "--weights", _bad_weights),
    ("omniglot", "maml", "--checkpoint", _bad_checkpoint),
    ("arm", "arm", "--weights", _bad_weights),
    ("arm", "arm", "--checkpoint", _bad_checkpoint),
], ids=["omniglot-weights", "omniglot-checkpoint", "arm-weights", "arm-checkpoint"])
def test_cli_bad_file_is_one_line_exit_2(how, tmp_path, capsys):
    group, family, flag, make = how
    bad = make(tmp_path, family)
    assert main([group, "eval", flag, str(bad), "--tasks", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pcmeta: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(bad) in err


def _exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return int(exc.code)


@pytest.mark.parametrize("argv,flag", [
    ("omniglot eval --steps -1", "--steps"), ("omniglot eval --tasks 0", "--tasks"),
    ("omniglot eval --shots 0", "--shots"), ("omniglot eval --ways 1", "--ways"),
    ("omniglot eval --queries 0", "--queries"), ("omniglot eval --seed -1", "--seed"),
    ("omniglot eval --bits 0", "--bits"), ("omniglot eval --bits 17", "--bits"), ("omniglot eval --tasks x", "--tasks"),
    ("omniglot compare --tasks 0", "--tasks"), ("omniglot compare --shots 5,0", "--shots"),
    ("omniglot sweep --queries 0", "--queries"), ("omniglot sweep --ways 1", "--ways"),
    ("arm replay --every 0", "--every"), ("arm replay --size 0x240", "--size"), ("arm replay --seed -1", "--seed"),
    ("bench env --steps 5", "--steps"), ("bench env --frames 0", "--frames"),
    ("arm eval --tasks 0", "--tasks"), ("arm eval --batch-size 0", "--batch-size"), ("arm eval --seed -1", "--seed"),
    ("arm demo --every 0", "--every"), ("arm demo --seed -2", "--seed"),
    ("bench snn --episodes 0", "--episodes"), ("bench snn --train-batch 0", "--train-batch"),
    ("bench snn --train-iters -1", "--train-iters"),
])
def test_cli_numeric_flag_out_of_range_exits_2_naming_it(argv, flag, capsys):
    assert _exit(argv.split()) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}:" in err and "Traceback" not in err, err


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {n}".strip(), p) for n, p in _subcommands(sub))
                yield name, sub


#: the commands whose flags pcmeta.demos.options' range types cover (registered in omniglot_eval, omniglot_chip,
#: cli_arm); the others register their flags elsewhere
RANGED = ("omniglot eval", "omniglot compare", "omniglot sweep", "arm replay", "bench env")


def test_numeric_flags_have_range_types_stated_in_help():
    cmds = dict(_subcommands(build_parser()))
    for name in RANGED:
        for action in cmds[name]._actions:
            assert action.type not in (int, float), (name, action.option_strings)
            m = re.search(r">=? -?[\d.]+|\d+\.\.\d+", getattr(action.type, "__name__", ""))
            if m:  # a range type: its range is in the help
                assert m.group(0) in (action.help or ""), (name, action.option_strings, m.group(0), action.help)


def test_range_types():
    assert options.positive_int("3") == 3 and options.nonneg_int("0") == 0
    assert options.int_range(2)("2") == 2 and options.int_list(1)("5,1") == [5, 1]
    assert options.positive_float("0.5") == 0.5
    for t, text in ((options.positive_int, "0"), (options.nonneg_int, "-1"), (options.positive_float, "0"),
                    (options.positive_float, "nan"), (options.positive_float, "inf"), (options.int_list(1), ",")):
        with pytest.raises(argparse.ArgumentTypeError):
            t(text)


def test_negative_inner_steps_are_refused():
    with pytest.raises(ValueError, match="steps must be >= 0"):
        MAML.from_weights(None).evaluate(None, None, None, None, steps=-1)
