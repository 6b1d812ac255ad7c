"""Portable Omniglot task specs: JSON round trip to the same pixels, validation, unknown characters."""
import copy
import json

import numpy as np
import pytest

from pcmeta.tasks.episodes import (
    OmniglotTask,
    check_omniglot_spec,
    check_omniglot_spec_fits,
    load_omniglot_task,
    load_omniglot_tasks,
    omniglot_tasks,
)


def _same(a: OmniglotTask, b: OmniglotTask) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("support_x", "support_y", "query_x", "query_y"))


@pytest.mark.parametrize("split, part", [("paper", "test"), ("paper", "train"), ("classic", "val")])
def test_task_rebuilt_from_its_json_spec_is_the_same(omniglot_dir, split, part):
    tasks = omniglot_tasks(3, n_way=5, k_shot=2, n_query=3, split=split, part=part, seed=3, data_dir=omniglot_dir)
    specs = [json.loads(json.dumps(t.spec)) for t in tasks]
    rebuilt = load_omniglot_tasks(specs, data_dir=omniglot_dir)
    for t, r, s in zip(tasks, rebuilt, specs):
        assert _same(t, r) and r.spec == t.spec == s and r.meta == t.meta
    assert _same(tasks[0], load_omniglot_task(specs[0], omniglot_dir))
    s = specs[0]
    assert (s["split"], s["part"], s["n_way"], s["k_shot"], s["n_query"]) == (split, part, 5, 2, 3)
    assert s["query_order"] == list(range(15))  # omniglot_tasks: class-major, as the CLI
    c = s["classes"][0]
    assert f"{c['alphabet']}/{c['character']}" == tasks[0].meta["characters"][0]
    assert c["support_drawings"] + c["query_drawings"] == [d + 1 for d in tasks[0].meta["drawings"][0]]
    if split == "classic":  # each rotation is its own class: the rotations vary
        assert {c["rotation"] for t in tasks for c in t.spec["classes"]} - {0}


def test_spec_names_the_official_drawing_and_rotation(omniglot_dir):
    """Drawing numbers are the official 1..20; the rotation is applied; the query order is honoured."""
    from pcmeta.tasks.omniglot import class_pool

    pool = class_pool("paper", "test", omniglot_dir)
    spec = {"family": "omniglot", "version": 1, "split": "paper", "part": "test", "n_way": 2, "k_shot": 1,
            "n_query": 2, "query_order": [3, 0, 2, 1],
            "classes": [{"alphabet": "Angelic", "character": "character01", "rotation": 90,
                         "support_drawings": [1], "query_drawings": [20, 5]},
                        {"alphabet": "Tengwar", "character": "character02", "rotation": 0,
                         "support_drawings": [7], "query_drawings": [8, 9]}]}
    t = load_omniglot_task(spec, omniglot_dir)
    a = pool.images[pool.characters.index("Angelic/character01")]
    b = pool.images[pool.characters.index("Tengwar/character02")]
    np.testing.assert_array_equal(t.support_x, [np.rot90(a[0]), b[6]])
    np.testing.assert_array_equal(t.query_x, [b[8], np.rot90(a[19]), b[7], np.rot90(a[4])])
    assert t.support_y.tolist() == [0, 1] and t.query_y.tolist() == [1, 0, 1, 0]
    assert t.without_answers().spec is None  # the spec determines the answers


@pytest.fixture(scope="module")
def small(omniglot_dir):
    return omniglot_tasks(1, n_way=3, k_shot=1, n_query=2, data_dir=omniglot_dir)[0]


@pytest.fixture
def spec(small):
    return copy.deepcopy(small.spec)


def test_unknown_character_or_wrong_part_raises(omniglot_dir, spec):
    bad = copy.deepcopy(spec)
    bad["classes"][1]["character"] = "character99"
    with pytest.raises(ValueError, match=r"class 1 names character '.*/character99'.*split 'paper' part 'test'"):
        load_omniglot_task(bad, omniglot_dir)
    spec["part"] = "train"  # the evaluation alphabets' characters are not among the background ones
    with pytest.raises(ValueError, match=r"not among the 964 characters of split 'paper' part 'train'"):
        load_omniglot_task(spec, omniglot_dir)


@pytest.mark.parametrize("change, msg", [
    (dict(version=2), "version 2 is not supported"),
    (dict(family="arm"), "family"),
    (dict(n_way=4), "n_way = 4 classes"),
    (dict(query_order=[0, 0, 1, 2, 3, 4]), "permutation"),
    (dict(query_order=[0, 1]), "query_order must be a list of 6"),
    (dict(k_shot=19), "n_query must be an int in 1..1"),
])
def test_bad_specs_are_named(spec, change, msg):
    spec = dict(spec, **change)
    with pytest.raises(ValueError, match=msg):
        check_omniglot_spec(spec)


@pytest.mark.parametrize("key, value, msg", [
    ("rotation", 45, "rotation must be 0, 90, 180 or 270"),
    ("support_drawings", [0], r"official numbers 1\.\.20"),
    ("query_drawings", [3, 3], "query_drawings"),
    ("alphabet", "Latin/x", "folder name"),
])
def test_bad_spec_classes_are_named(spec, key, value, msg):
    spec["classes"][0][key] = value
    if key == "query_drawings":
        spec["classes"][0]["support_drawings"] = [3]
        msg = "distinct"
    with pytest.raises(ValueError, match=msg):
        check_omniglot_spec(spec)
    del spec["classes"][0][key]
    with pytest.raises(ValueError, match="must be a dict with keys"):
        check_omniglot_spec(spec)


def test_spec_fits_names_the_differing_field(spec):
    fit = dict(split="paper", part="test", n_way=3, k_shot=1, n_query=2)
    assert check_omniglot_spec_fits(spec, **fit) == spec
    with pytest.raises(ValueError, match=r"but this env draws from split 'paper' part 'train'.*: part differs; "
                                         r"make the env with part='test'"):
        check_omniglot_spec_fits(spec, **dict(fit, part="train"))
    with pytest.raises(ValueError, match=r"n_way, k_shot differ; make the env with n_way=3, k_shot=1"):
        check_omniglot_spec_fits(spec, **dict(fit, n_way=5, k_shot=5))


def test_task_checks_its_spec_against_its_arrays(small):
    t = small
    with pytest.raises(ValueError, match="spec describes a 3-way 1-shot task"):
        OmniglotTask(t.support_x, t.support_y, t.query_x[:4], t.query_y[:4], 3, spec=t.spec)


def test_docstring_example_spec_loads(omniglot_dir):
    import re

    import pcmeta.tasks.episodes as episodes

    example = json.loads(re.search(r"::\n\n(.*?)\n\n- ", episodes.__doc__, re.S).group(1))
    t = load_omniglot_task(example, omniglot_dir)
    assert t.query_y.tolist() == [1, 0, 1, 0] and t.meta["characters"] == ["Angelic/character07", "Tengwar/character12"]
