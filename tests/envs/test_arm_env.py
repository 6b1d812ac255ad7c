"""Tests of pcmeta/ArmTrajectory-v0 (pcmeta.envs.arm) and the arm CLI (pcmeta.demos.cli_arm)."""
from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import pcmeta.envs  # noqa: F401  (registers the ids)
from pcmeta.envs import arm as arm_module
from pcmeta.envs.arm import MAX_EPISODE_STEPS, MOTOR_FORCE, ArmTrajectoryEnv
from pcmeta.tasks import trajectories as tr

ROBOTS = ["scorbot", "planar2"]


@pytest.mark.parametrize("robot", ROBOTS)
def test_pybullet_effector_equals_analytic_kinematics(robot):
    """Acceptance 1: PyBullet's effector = SPEC kinematics within 1 mm over 1,000 random configurations."""
    env = ArmTrajectoryEnv(robot=robot)
    try:
        p, cid, body = arm_module.import_pybullet(), env.physics_client, env.body_id
        rng = np.random.default_rng(0)
        spec = tr.robot_spec(robot)
        lo = np.asarray(spec.lower) if spec.lower else np.array([-np.pi, -np.pi])
        hi = np.asarray(spec.upper) if spec.upper else np.array([np.pi, np.pi])
        qs = rng.uniform(lo, hi, size=(1000, 2))
        pos = np.empty((1000, 3))
        for k, q in enumerate(qs):
            for j in range(2):
                p.resetJointState(body, j, q[j], 0.0, physicsClientId=cid)
            pos[k] = p.getLinkState(body, env.effector_link, computeForwardKinematics=True, physicsClientId=cid)[4]
        err = np.linalg.norm(pos - tr.forward_kinematics(qs, robot), axis=-1)
        assert err.max() < 1e-3
        assert err.max() < 1e-6  # in fact exact up to PyBullet's float rounding
    finally:
        env.close()


def _oracle_mse(env, seed, key="omega_path"):
    obs, info = env.reset(seed=seed)
    vel = info["target"][key]
    d2 = []
    for t in range(env.unwrapped.T):
        obs, r, term, trunc, inf = env.step(vel[t])
        assert not term and trunc == (t == env.unwrapped.T - 1)
        assert inf["t"] == t
        d2.append(-r)
    return float(np.mean(d2))


@pytest.mark.parametrize("robot", ROBOTS)
def test_oracle_replay_tracks_target(robot):
    """Acceptance 2: executing the target's joint velocities reproduces its path (MSE < 1e-4 m^2)."""
    env = gym.make("pcmeta/ArmTrajectory-v0", robot=robot)
    try:
        mses = [_oracle_mse(env, s) for s in range(4)]
        assert max(mses) < 1e-4
        assert max(mses) < 1e-6  # measured ~1e-11 (Scorbot), ~1e-8 (planar)
        # doing nothing is far from the target: the error measure can fail
        env.reset(seed=0)
        d2 = [-env.step(np.zeros(2))[1] for _ in range(249)]
        assert np.mean(d2) > 1e-3
    finally:
        env.close()


def test_observation_layout_and_reward():
    env = ArmTrajectoryEnv()
    obs, info = env.reset(seed=1)
    tgt = info["target"]
    assert obs.shape == (11,) and obs.dtype == np.float32 and env.observation_space.contains(obs)
    np.testing.assert_allclose(obs[0:2], [0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(obs[4:7], [0.92, -0.033, 0.3585], atol=1e-6)
    np.testing.assert_allclose(obs[7:10], tgt["xyz"][0], atol=1e-6)
    assert obs[10] == 0.0
    a = np.array([0.5, -0.25])
    for t in range(10):
        obs, r, term, trunc, inf = env.step(a)
    q = 0.01 * 10 * a  # start (0, 0) + 0.01 * sum of 10 steps
    np.testing.assert_allclose(obs[0:2], q, atol=1e-6)
    np.testing.assert_allclose(obs[2:4], a, atol=1e-6)
    xyz = tr.forward_kinematics(q, "scorbot")
    np.testing.assert_allclose(obs[4:7], xyz, atol=1e-6)
    np.testing.assert_allclose(obs[7:10], tgt["xyz"][10], atol=1e-6)
    assert obs[10] == pytest.approx(10 / 249)
    assert r == pytest.approx(-np.sum((xyz - tgt["xyz"][9]) ** 2), abs=1e-8)
    env.close()


@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")  # actions are rad/s by design
@pytest.mark.filterwarnings("ignore:.*not having a spec")
def test_check_env_and_make_forms(monkeypatch):
    """Acceptance 3: the default check_env passes headless; make works after import and as "module:id"."""
    monkeypatch.delenv("DISPLAY", raising=False)  # headless, as CI: "human" is then not declared
    env = gym.make("pcmeta/ArmTrajectory-v0")
    if not arm_module.human_render_available():
        assert env.unwrapped.metadata["render_modes"] == ["rgb_array"]
    check_env(env.unwrapped)  # default: also makes the env in each declared render mode and renders
    env.close()
    renv = ArmTrajectoryEnv(render_mode="rgb_array")
    check_env(renv)  # no spec: renders rgb_array (its own mode) only
    renv.close()
    code = ("import gymnasium as gym; e = gym.make('pcmeta.envs:pcmeta/ArmTrajectory-v0', robot='planar2'); "
            "o, i = e.reset(seed=0); print(o.shape, i['robot']); e.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(11,) planar2"  # and no pybullet chatter on stdout


def test_same_seed_same_episode():
    env = gym.make("pcmeta/ArmTrajectory-v0")
    rng = np.random.default_rng(0)
    acts = rng.uniform(-3, 3, size=(50, 2))
    runs = []
    for _ in range(2):
        obs, info = env.reset(seed=123)
        seq = [obs] + [env.step(a)[0] for a in acts]
        runs.append((np.array(seq), info["target"]["xyz"]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    obs, info = env.reset(seed=124)
    assert not np.allclose(info["target"]["xyz"], runs[0][1])
    env.close()


def _run_async(n_steps):
    vec = gym.vector.AsyncVectorEnv([lambda: gym.make("pcmeta/ArmTrajectory-v0") for _ in range(4)])
    try:
        obs, info = vec.reset(seed=0)
        assert obs.shape == (4, 11)
        rng = np.random.default_rng(0)
        n_trunc = 0
        for _ in range(n_steps):
            obs, r, term, trunc, info = vec.step(rng.uniform(-3, 3, size=(4, 2)).astype(np.float32))
            n_trunc += int(trunc.sum())
        assert np.isfinite(obs).all() and np.isfinite(r).all()
        assert n_trunc >= 4 * (n_steps // 250)  # episodes end by truncation every 249 steps (plus autoreset)
        procs = list(vec.processes)
    finally:
        vec.close()
    for proc in procs:  # workers (each with its own physics client) have exited cleanly
        assert not proc.is_alive() and proc.exitcode == 0


def test_async_vector_env_short():
    _run_async(600)


@pytest.mark.slow
def test_async_vector_env_10000_steps():
    _run_async(10_000)


def test_human_mode_without_display_is_a_clear_error(monkeypatch):
    if sys.platform == "darwin" or sys.platform.startswith("win"):
        pytest.skip("macOS and Windows always have a display")
    monkeypatch.delenv("DISPLAY", raising=False)
    assert not arm_module.human_render_available()
    with pytest.raises(RuntimeError, match="display"):
        ArmTrajectoryEnv(render_mode="human")
    with pytest.raises(ValueError, match="render_mode"):
        ArmTrajectoryEnv(render_mode="rgb")


def test_render_modes_follow_the_display(monkeypatch):
    """"human" is declared exactly where a display exists, per instance (the class: at import)."""
    if sys.platform == "darwin" or sys.platform.startswith("win"):
        pytest.skip("macOS and Windows always have a display")
    monkeypatch.delenv("DISPLAY", raising=False)
    env = ArmTrajectoryEnv()
    assert env.metadata["render_modes"] == ["rgb_array"] and env.metadata["render_fps"] == 100
    env.close()
    monkeypatch.setenv("DISPLAY", ":99")  # declared only: nothing is opened without render_mode="human"
    env = ArmTrajectoryEnv()
    assert env.metadata["render_modes"] == ["rgb_array", "human"]
    env.close()


def test_max_episode_steps_agrees_with_own_truncation():
    """The registered limit is T = 249 and TimeLimit truncates at exactly the step the env itself does."""
    assert gym.spec("pcmeta/ArmTrajectory-v0").max_episode_steps == MAX_EPISODE_STEPS == tr.T_STEPS == 249
    assert pcmeta.envs.MAX_EPISODE_STEPS["pcmeta/ArmTrajectory-v0"] == MAX_EPISODE_STEPS
    env = gym.make("pcmeta/ArmTrajectory-v0")
    assert env.spec.max_episode_steps == 249
    raw = ArmTrajectoryEnv()
    rng = np.random.default_rng(0)
    for episode in range(2):
        env.reset(seed=episode)
        raw.reset(seed=episode)
        for t in range(249):
            a = rng.uniform(-3, 3, size=2).astype(np.float32)
            _, r, term, trunc, _ = env.step(a)
            _, r_raw, term_raw, trunc_raw, _ = raw.step(a)
            assert (term, trunc) == (term_raw, trunc_raw) == (False, t == 248)
            assert r == r_raw
    env.close()
    raw.close()


def test_version_history_and_spec_in_docstring():
    doc = arm_module.__doc__
    assert "Version history" in doc and "- v0: initial version" in doc
    assert "max_episode_steps=249" in doc
    for word in ("Observation", "Action", "Reward", "truncated", "terminated", "rad/s", "m^2"):
        assert word in doc
    assert "version history" in ArmTrajectoryEnv.__doc__


def test_public_handles():
    """What code beside the env needs (demos, benchmarks): no private names."""
    assert MOTOR_FORCE == 1000.0
    p = arm_module.import_pybullet()
    env = ArmTrajectoryEnv(render_mode="rgb_array", width=64, height=48)
    obs, info = env.reset(seed=0)
    for t in range(5):
        obs, *_ = env.step(info["target"]["omega_path"][t])
    pos = env.effector_position
    assert pos.dtype == np.float64 and pos.shape == (3,)
    np.testing.assert_allclose(pos, obs[4:7], atol=1e-6)
    pos[:] = 0.0  # a copy: the env is untouched
    assert np.abs(env.effector_position).sum() > 0
    np.testing.assert_array_equal(
        p.getLinkState(env.body_id, env.effector_link, physicsClientId=env.physics_client)[4], env.effector_position)
    view, proj = env.camera_matrices()
    assert len(view) == 16 and len(proj) == 16
    img = p.getCameraImage(64, 48, view, proj, renderer=p.ER_TINY_RENDERER, physicsClientId=env.physics_client)
    assert (img[0], img[1]) == (64, 48)
    cid = env.physics_client
    env.close()
    assert env.physics_client == -1 and not p.isConnected(physicsClientId=cid)


def test_close_releases_clients():
    envs = [ArmTrajectoryEnv() for _ in range(5)]
    cids = [e.physics_client for e in envs]
    assert len(set(cids)) == 5
    p = arm_module.import_pybullet()
    for e in envs:
        e.close()
        e.close()  # twice is fine
    assert not any(p.isConnected(physicsClientId=c) for c in cids)


def test_bad_actions():
    """Acceptance 5: wrong shape / NaN raise ValueError naming the shape; too fast is clipped (documented)."""
    env = ArmTrajectoryEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        env.step(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([0.0, np.inf]))
    obs, r, term, trunc, info = env.step(np.array([10.0, -10.0]))
    assert info["action_clipped"]
    np.testing.assert_allclose(obs[2:4], [np.pi, -np.pi], atol=1e-5)
    np.testing.assert_allclose(obs[0:2], [0.01 * np.pi, -0.01 * np.pi], atol=1e-6)
    obs, r, term, trunc, info = env.step(np.array([1.0, 1.0]))
    assert not info["action_clipped"]
    env.close()


def test_joints_stop_at_limits_and_episode_end():
    env = ArmTrajectoryEnv()
    env.reset(seed=0)
    limits = np.deg2rad([130.0, 70.0])
    hit = False
    for t in range(249):
        obs, r, term, trunc, info = env.step(np.array([np.pi, -np.pi]))
        hit |= info["at_limit"]
        assert obs[0] <= limits[0] + 1e-6 and obs[1] >= -limits[1] - 1e-6
    assert hit and trunc
    np.testing.assert_allclose(obs[0:2], [limits[0], -limits[1]], atol=1e-6)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))
    env.close()


def test_tasks_api():
    env = gym.make("pcmeta/ArmTrajectory-v0")
    env.reset(seed=5)
    tasks = env.unwrapped.sample_tasks(3)
    assert len(tasks) == 3 and tasks[0]["xyz"].shape == (249, 3) and tasks[0]["omega"].shape == (249, 2)
    env.unwrapped.set_task(tasks[1])
    for seed in (0, 1):  # a fixed task ignores the seed's random target
        obs, info = env.reset(seed=seed)
        np.testing.assert_array_equal(info["target"]["xyz"], tasks[1]["xyz"])
    assert _oracle_mse(env, 9) < 1e-6
    env.unwrapped.set_task(None)
    obs, info = env.reset(seed=0)
    assert not np.allclose(info["target"]["xyz"], tasks[1]["xyz"])
    targets = tr.sample_targets(1, "scorbot", rng=0)
    env.unwrapped.set_task(targets)
    np.testing.assert_allclose(env.reset()[1]["target"]["xyz"], targets.xyz[0])
    with pytest.raises(ValueError, match="robot"):
        env.unwrapped.set_task(tr.sample_targets(1, "planar2", rng=0))
    with pytest.raises(ValueError, match=r"\(249, 3\)"):
        env.unwrapped.set_task({"omega": np.zeros((249, 2)), "q": np.zeros((249, 2)), "xyz": np.zeros((10, 3))})
    env.close()


def test_rgb_array_frame_shows_arm_target_and_trail():
    env = ArmTrajectoryEnv(render_mode="rgb_array")
    obs, info = env.reset(seed=5)
    for t in range(150):
        env.step(info["target"]["omega_path"][t] * (1.0 if t < 100 else 0.3))  # trail departs from target
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    f = frame.astype(int)
    red = (f[..., 0] > 180) & (f[..., 1] < 80) & (f[..., 2] < 80)
    blue = (f[..., 2] > 180) & (f[..., 0] < 60) & (f[..., 1] < 120)
    orange = (f[..., 0] > 200) & (f[..., 1] > 100) & (f[..., 1] < 170) & (f[..., 2] < 60)
    assert red.sum() > 50 and blue.sum() > 50 and orange.sum() > 100
    # the current target point is drawn where the camera projects it
    c, r = np.round(env.project(info["target"]["xyz"][150])).astype(int)
    assert red[max(r - 2, 0): r + 3, max(c - 2, 0): c + 3].any()
    env.close()


def test_replay_cli_writes_gif_and_plot(tmp_path):
    from PIL import Image

    from pcmeta.demos.cli import main

    out = tmp_path / "replay.gif"
    assert main(["arm", "replay", "--seed", "3", "--out", str(out), "--every", "10"]) == 0
    assert out.exists() and (tmp_path / "replay.png").exists()
    with Image.open(out) as im:
        assert im.n_frames == 26 and im.size == (320, 240)
    with Image.open(tmp_path / "replay.png") as im:
        assert im.size[0] > 400
    assert main(["arm", "replay", "--out", str(tmp_path / "x.avi")]) == 2


def test_bench_env_json(tmp_path):
    from pcmeta.demos.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "env", "--steps", "1000", "--frames", "10", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in ("env_steps_per_s", "raw_pybullet_steps_per_s", "render_fps"):
        assert res[key] > 0
