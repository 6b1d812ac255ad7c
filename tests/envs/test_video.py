"""pcmeta.envs.record_video / write_video: GIF and MP4 with pcmeta's own dependencies (no moviepy)."""
from __future__ import annotations

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import pcmeta.envs
from pcmeta.envs import record_video, write_video


def test_record_arm_gif_and_mp4(tmp_path):
    env = gym.make("pcmeta/ArmTrajectory-v0", render_mode="rgb_array", width=96, height=64)
    try:
        gif = record_video(env, None, tmp_path / "arm.gif", seed=0, max_steps=20)
        assert gif["steps"] == 20 and gif["every"] == 2 and gif["fps"] == 50.0
        assert gif["frames"] == 11  # after reset + every 2nd of 20 steps
        frames = iio.imread(gif["path"], index=None)
        assert frames.shape[0] == 11 and frames.shape[1:3] == (64, 96)
        vel = env.unwrapped.sample_tasks(1)[0]["omega_path"]
        steps = iter(range(249))
        mp4 = record_video(env, lambda obs: vel[next(steps)], tmp_path / "sub" / "arm.mp4", seed=1)
        assert mp4["truncated"] and not mp4["terminated"] and mp4["steps"] == 249 and mp4["frames"] == 250
        frames = iio.imread(mp4["path"], index=None)  # read back through imageio-ffmpeg
        assert frames.shape == (250, 64, 96, 3) and frames.dtype == np.uint8
        assert frames.std() > 5  # a picture, not a blank
    finally:
        env.close()


def test_record_omniglot_episode(omniglot_dir, tmp_path):
    env = gym.make("pcmeta/OmniglotFewShot-v0", n_way=3, n_query=2, data_dir=str(omniglot_dir),
                   render_mode="rgb_array")
    res = record_video(env, lambda obs: 0, tmp_path / "omniglot.gif", seed=0)
    assert res["terminated"] and not res["truncated"] and res["steps"] == 6 and res["frames"] == 7
    assert res["fps"] == 4.0
    frames = iio.imread(res["path"], index=None)
    assert frames.shape[1:3] == env.render().shape[:2]
    # the last query stays on screen after the last answer: Pillow merges equal consecutive GIF frames
    # into one longer frame, so the GIF holds 6 frames that last as long as the 7 recorded ones
    with Image.open(res["path"]) as im:
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert len(durations) == frames.shape[0] == 6 and sum(durations) == 7 * 250
    env.close()


def test_write_video_checks_its_input(tmp_path):
    f = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        write_video([f], tmp_path / "x.avi", fps=10)
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "x.gif", fps=10)
    with pytest.raises(ValueError, match="uint8"):
        write_video([f, np.zeros((16, 16, 3), np.float32)], tmp_path / "x.gif", fps=10)
    with pytest.raises(ValueError, match="fps"):
        write_video([f], tmp_path / "x.gif", fps=0)
    with pytest.warns(UserWarning, match="slower than real time"):
        write_video([f, f], tmp_path / "fast.gif", fps=100)
    env = gym.make("pcmeta/ArmTrajectory-v0")
    with pytest.raises(ValueError, match="rgb_array"):
        record_video(env, None, tmp_path / "x.gif")
    env.close()
    assert set(pcmeta.envs.__all__) >= {"record_video", "write_video"}
