"""A stable-baselines3 PPO policy, trained in float on the arm task, then run on pcmeta's simulated PCM chip
(issue #18).

What it does:

1. Trains a stock stable-baselines3 PPO agent (``"MlpPolicy"``: separate actor and critic MLPs 11-64-64,
   tanh; a Gaussian policy over the 2 joint velocities) in software on ``pcmeta/ArmTrajectory-v0``
   (Scorbot arm; 249-step episodes, reward minus the squared effector-target distance in m^2). Settings:
   4 environments, gamma 0.9 (the task is nearly myopic: each step's reward depends on the action of that
   step), reward normalisation during training only (``VecNormalize(norm_obs=False)``: the observations are
   fed raw, so the policy network is all that runs at inference); SB3's defaults otherwise.
2. Converts the trained ``model.policy`` (an ``nn.Module``) with ``hw.convert(policy, PCMConfig(
   drift_compensation=...), seed=s)``: its six ``nn.Linear`` layers (actor, critic, action and value heads)
   are programmed into PCM tiles; biases, tanh and the Gaussian's ``log_std`` stay digital. The converted
   policy acts through SB3's own ``policy.predict(obs, deterministic=True)`` (the mean action, clipped to
   +-pi rad/s).
3. Evaluates the mean episode return over ``--episodes`` fixed episodes (env seeds 10000, 10001, ...;
   training resets with seeds 0..3 and then unseeded) after 1 s, 1 h, 1 day, 1 month and 1 year of drift
   (``hw.elapse``), with global drift compensation and without, for ``--chips`` chip seeds (one programming
   each). The return of an
   episode is averaged over the chips first; mean and 95 % CI (1.96 standard errors) are then over the
   episodes. References on the same episodes: the float policy (``float``) and uniformly random actions
   (``random``).
4. Times end-to-end inference of the converted policy against the float one: ``policy.predict`` on a batch
   of 1024 observations (drawn from the float policy's evaluation episodes) and on one observation, and the
   whole episode loop (env steps included), printed as chip/float ratios (best of several runs each).
5. Writes ``returns.csv`` (time_s, time, compensation, mean_return, ci95, n_episodes, n_chips; the
   reference rows, compensation ``float`` and ``random``, are repeated at every time), ``returns.png``,
   ``timing.json`` and the trained agent ``ppo_policy.zip`` into ``--out``, and prints the table (and the
   chip's loss against the float policy paired by episode, which the episode-to-episode spread of the
   returns hides). The plot shows minus the return (the summed squared tracking distance) on a log scale.

The chip is ``PCMConfig(drift_compensation=...)`` with pcmeta's defaults otherwise (PCM-like devices,
8-bit DAC and ADC, 256 x 256 tiles, output noise 0.06).

Resumable: the trained agent is saved as ``ppo_policy.zip`` (with ``ppo_policy.json``: the settings it was
trained with and the training time) and loaded from there when present and made for the same settings.

Needs ``pip install stable-baselines3`` (``pip install -e .[sb3]``). Run (from the repository root)::

    OMP_NUM_THREADS=1 python examples/ppo_on_pcm.py --out runs/ppo_pcm

(defaults: 300,000 training steps, about 5 minutes on one core; 30 episodes x 3 chip seeds, about 2 minutes).
``--quick`` (2,048 training steps, 3 episodes, 1 chip, times 1 s and 1 y) is the smoke test of
tests/examples/test_ppo_on_pcm.py.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pcmeta.agents.evaluation import mean_ci95
from pcmeta.hardware.times import TIMES, format_time

ENV_ID = "pcmeta/ArmTrajectory-v0"
FULL_TIMES = ("1s", "1h", "1d", "1mo", "1y")
QUICK_TIMES = ("1s", "1y")
COMPENSATIONS = ("global", "none")
REFERENCES = ("float", "random")
EVAL_SEED0 = 10_000  # env seeds of the evaluation episodes: 10000, 10001, ...
CHIP_SEED0 = 1_000   # chip seeds: 1000, 1001, ...
N_ENVS = 4
GAMMA = 0.9


# ----------------------------------------------------------------------------------------- training
def ppo_settings(timesteps: int, seed: int, quick: bool) -> dict:
    """The PPO hyper-parameters (SB3 defaults except gamma; --quick: tiny rollouts)."""
    s = {"env": ENV_ID, "timesteps": int(timesteps), "seed": int(seed), "n_envs": N_ENVS, "gamma": GAMMA,
         "norm_reward": True, "policy": "MlpPolicy"}
    if quick:
        s.update(n_steps=256, batch_size=256, n_epochs=2)
    return s


def train_or_load(out: Path, settings: dict):
    """The PPO agent saved in ``out`` if it was made with ``settings``; else a new one, trained and saved."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    import pcmeta.envs  # noqa: F401  (registers the env ids)

    path, meta_path = out / "ppo_policy.zip", out / "ppo_policy.json"
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings:
            model = PPO.load(path, device="cpu")
            print(f"loaded {path} (trained {settings['timesteps']} steps in {meta['train_s']:.0f} s)")
            return model, {"train_s": meta["train_s"], "loaded": True}
        print(f"{path} was made for other settings ({meta.get('settings')}); training again")
    venv = make_vec_env(ENV_ID, n_envs=settings["n_envs"], seed=settings["seed"])
    venv = VecNormalize(venv, norm_obs=False, norm_reward=settings["norm_reward"], gamma=settings["gamma"])
    kw = {k: settings[k] for k in ("n_steps", "batch_size", "n_epochs") if k in settings}
    model = PPO(settings["policy"], venv, gamma=settings["gamma"], seed=settings["seed"], device="cpu",
                verbose=0, **kw)
    print(f"training PPO for {settings['timesteps']} steps ({settings['n_envs']} envs, one thread) ...", flush=True)
    t0 = time.perf_counter()
    model.learn(settings["timesteps"])
    train_s = time.perf_counter() - t0
    venv.close()
    model.save(out / "ppo_policy.tmp.zip")
    os.replace(out / "ppo_policy.tmp.zip", path)
    meta_path.write_text(json.dumps({"settings": settings, "train_s": train_s}, indent=2) + "\n")
    print(f"trained in {train_s:.0f} s; saved {path}")
    return model, {"train_s": train_s, "loaded": False}


# ----------------------------------------------------------------------------------------- episodes
class Episodes:
    """``n`` fixed episodes (env seeds ``EVAL_SEED0 + i``) run in lockstep: one batched policy call per step."""

    def __init__(self, n: int):
        import gymnasium as gym

        import pcmeta.envs  # noqa: F401

        self.envs = [gym.make(ENV_ID) for _ in range(n)]
        self.seeds = [EVAL_SEED0 + i for i in range(n)]

    def run(self, act, record: list | None = None) -> np.ndarray:
        """Returns of the episodes under ``act``: (n, 11) observations -> (n, 2) actions (appended to
        ``record``, if given, at every step)."""
        obs = np.stack([env.reset(seed=s)[0] for env, s in zip(self.envs, self.seeds)])
        ret = np.zeros(len(self.envs))
        done = np.zeros(len(self.envs), dtype=bool)
        while not done.all():
            if record is not None:
                record.append(obs[~done].copy())
            actions = act(obs)
            for i, env in enumerate(self.envs):
                if done[i]:
                    continue
                o, r, term, trunc, _ = env.step(actions[i])
                obs[i] = o
                ret[i] += r
                done[i] = term or trunc
        return ret

    def close(self) -> None:
        for env in self.envs:
            env.close()


def policy_actor(policy):
    """``act(obs)`` of an SB3 policy (float or converted): its deterministic action, as SB3's predict gives it."""
    return lambda obs: policy.predict(obs, deterministic=True)[0]


def random_actor(space, seed: int):
    rng = np.random.default_rng(seed)
    lo, hi = space.low, space.high
    return lambda obs: rng.uniform(lo, hi, size=(len(obs), *space.shape)).astype(np.float32)


def chip_returns(hw, policy, cfg, times_s: list[float], chips: int, episodes: Episodes) -> np.ndarray:
    """(chips, times, episodes) returns of ``policy`` converted with ``cfg``, one programming per chip seed."""
    out = np.zeros((chips, len(times_s), len(episodes.seeds)))
    for c in range(chips):
        chip = hw.convert(policy, cfg, seed=CHIP_SEED0 + c)
        chip.set_training_mode(False)
        now = 0.0
        for j, t in enumerate(times_s):
            hw.elapse(chip, t - now)
            now = t
            out[c, j] = episodes.run(policy_actor(chip))
    return out


# ----------------------------------------------------------------------------------------- timing
def _best_s(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` (after a warm-up): the least disturbed by other work on a
    shared machine."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(min(ts))


def time_inference(policy, chip, obs_batch: np.ndarray, repeats: int) -> dict:
    """Seconds (best of ``repeats``) of ``predict`` on a batch and on one observation, and of one episode, for the
    float policy and the converted one."""
    res = {"batch": len(obs_batch), "repeats": repeats, "threads": torch.get_num_threads()}
    one = obs_batch[:1]
    episode = Episodes(1)
    try:
        for name, pol in (("float", policy), ("chip", chip)):
            res[f"{name}_batch_s"] = _best_s(lambda: pol.predict(obs_batch, deterministic=True), repeats)
            res[f"{name}_single_s"] = _best_s(lambda: pol.predict(one, deterministic=True), 10 * repeats)
            res[f"{name}_episode_s"] = _best_s(lambda: episode.run(policy_actor(pol)), max(1, repeats // 5))
    finally:
        episode.close()
    for k in ("batch", "single", "episode"):
        res[f"ratio_{k}"] = res[f"chip_{k}_s"] / res[f"float_{k}_s"]
    return res


# ----------------------------------------------------------------------------------------- output
def plot(rows: list[dict], path: Path, title: str) -> None:
    """Tracking cost (minus the mean return) against drift time, log-log; references as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for comp, color, ls in (("global", "tab:blue", "-"), ("none", "tab:red", "--")):
        r = [row for row in rows if row["compensation"] == comp]
        ci = [0.0 if math.isnan(row["ci95"]) else row["ci95"] for row in r]
        ax.errorbar([row["time_s"] for row in r], [-row["mean_return"] for row in r], yerr=ci, color=color, ls=ls,
                    marker="o", capsize=3, label=f"PCM chip, compensation {comp}")
    for ref, color, label in (("float", "black", "float policy (software)"), ("random", "gray", "random actions")):
        r = [row for row in rows if row["compensation"] == ref]
        if r:
            m, ci = -r[0]["mean_return"], r[0]["ci95"]
            ax.axhline(m, color=color, ls=":", lw=1.2, label=label)
            if not math.isnan(ci) and m - ci > 0:
                ax.axhspan(m - ci, m + ci, color=color, alpha=0.08, lw=0)
    ts = sorted({row["time_s"] for row in rows})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ts, [format_time(t) for t in ts])
    ax.set_xlabel("time after programming")
    ax.set_ylabel("minus the mean episode return\n(summed squared distance, m$^2$; lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: list[dict], time_names, n_episodes: int, chips: int) -> None:
    print(f"\nmean episode return (higher is better; 0 = perfect tracking), {n_episodes} episodes, "
          f"+- 95 % CI over episodes; chip: each episode's return averaged over {chips} chip seed(s)")
    head = f"{'compensation':12s} " + " ".join(f"{n:>16s}" for n in time_names)
    print(head)
    print("-" * len(head))
    for comp in REFERENCES[:1] + COMPENSATIONS + REFERENCES[1:]:
        r = [row for row in rows if row["compensation"] == comp]
        cells = [f"{row['mean_return']:7.2f}" + ("" if math.isnan(row["ci95"]) else f" +-{row['ci95']:5.2f}")
                 for row in r]
        print(f"{comp:12s} " + " ".join(f"{c:>16s}" for c in cells))


def print_paired(deltas: dict, time_names) -> None:
    """The chip's return minus the float policy's on the same episode: mean +- 95 % CI (paired)."""
    print("\nchip minus float policy, paired by episode (mean +- 95 % CI; negative = worse on the chip)")
    print(f"{'compensation':12s} " + " ".join(f"{n:>16s}" for n in time_names))
    for comp, per_time in deltas.items():
        cells = []
        for d in per_time:
            m, ci = mean_ci95(d)
            cells.append(f"{m:7.2f}" + ("" if math.isnan(ci) else f" +-{ci:5.2f}"))
        print(f"{comp:12s} " + " ".join(f"{c:>16s}" for c in cells))


# ----------------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder (agent, CSV, PNG, timing)")
    p.add_argument("--timesteps", type=int, default=None, help="PPO training steps (default 300000; --quick 2048)")
    p.add_argument("--episodes", type=int, default=None, help="evaluation episodes (default 30; --quick 3)")
    p.add_argument("--chips", type=int, default=None, help="chip seeds (programmings) per point (default 3; "
                                                              "--quick 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of PPO's initialisation, envs and training")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny training, 3 episodes, 1 chip, 2 times")
    args = p.parse_args(argv)
    for name, full, quick in (("timesteps", 300_000, 2048), ("episodes", 30, 3), ("chips", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < (2 if name == "episodes" else 1):
            p.error(f"--{name} must be at least {2 if name == 'episodes' else 1}")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import pcmeta.hardware as hw

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    time_names = QUICK_TIMES if args.quick else FULL_TIMES
    times_s = [TIMES[n] for n in time_names]

    model, info = train_or_load(out, ppo_settings(args.timesteps, args.seed, args.quick))
    policy = model.policy
    policy.set_training_mode(False)
    cfg = hw.PCMConfig(drift_compensation="global")

    episodes = Episodes(args.episodes)
    rows: list[dict] = []
    deltas: dict[str, list[np.ndarray]] = {}

    def add(t, tn, comp, per_episode):
        m, ci = mean_ci95(per_episode)
        rows.append(dict(time_s=t, time=tn, compensation=comp, mean_return=m, ci95=ci,
                         n_episodes=len(per_episode), n_chips=args.chips if comp in COMPENSATIONS else 0))

    try:
        seen: list[np.ndarray] = []
        refs = {"float": episodes.run(policy_actor(policy), seen),
                "random": episodes.run(random_actor(model.action_space, args.seed))}
        for comp in COMPENSATIONS:
            t0 = time.perf_counter()
            R = chip_returns(hw, policy, cfg.replace(drift_compensation=comp), times_s, args.chips, episodes)
            print(f"  chip, compensation {comp}: {args.chips} chip(s) x {len(times_s)} times x {args.episodes} "
                  f"episodes in {time.perf_counter() - t0:.0f} s", flush=True)
            for j, (t, tn) in enumerate(zip(times_s, time_names)):
                add(t, tn, comp, R[:, j].mean(axis=0))
            deltas[comp] = [R[:, j].mean(axis=0) - refs["float"] for j in range(len(times_s))]
        for ref in REFERENCES:
            for t, tn in zip(times_s, time_names):
                add(t, tn, ref, refs[ref])
    finally:
        episodes.close()

    fields = ["time_s", "time", "compensation", "mean_return", "ci95", "n_episodes", "n_chips"]
    with open(out / "returns.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "mean_return": f"{r['mean_return']:.4f}", "ci95": f"{r['ci95']:.4f}"})
    plot(rows, out / "returns.png",
         f"SB3 PPO policy on pcmeta/ArmTrajectory-v0, on simulated PCM\n({args.episodes} episodes x "
         f"{args.chips} chip seed(s), mean +- 95 % CI over episodes)")

    # end-to-end inference: the converted policy vs the float one (chip one day after programming)
    chip = hw.convert(policy, cfg, seed=CHIP_SEED0)
    chip.set_training_mode(False)
    hw.elapse(chip, TIMES["1d"])
    seen_obs = np.concatenate(seen)  # the observations of the float policy's episodes
    obs_batch = seen_obs[np.random.default_rng(args.seed).permutation(len(seen_obs))[:1024]]
    timing = time_inference(policy, chip, obs_batch, 5 if args.quick else 50)
    timing.update(train_s=info["train_s"], timesteps=args.timesteps)
    rep = hw.report(chip)
    timing["chip"] = {k: rep[k] for k in ("tiles", "devices", "mvms", "macs")}
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")

    print_table(rows, time_names, args.episodes, args.chips)
    print_paired(deltas, time_names)
    print(f"\ntraining: {args.timesteps} PPO steps in {info['train_s']:.0f} s"
          + (" (loaded)" if info["loaded"] else ""))
    print(f"chip: {rep['tiles']} tiles, {rep['devices']} devices (actor and critic; acting uses the actor only)")
    print(f"inference, {timing['threads']} thread, chip/float ratio: predict on {timing['batch']} observations "
          f"{1e3 * timing['float_batch_s']:.2f} ms vs {1e3 * timing['chip_batch_s']:.2f} ms = "
          f"{timing['ratio_batch']:.1f}x; one observation {1e3 * timing['float_single_s']:.3f} ms vs "
          f"{1e3 * timing['chip_single_s']:.3f} ms = {timing['ratio_single']:.1f}x; one episode (249 steps, env "
          f"included) {timing['float_episode_s']:.3f} s vs {timing['chip_episode_s']:.3f} s = "
          f"{timing['ratio_episode']:.1f}x")
    print(f"wrote {out / 'returns.csv'}, {out / 'returns.png'}, {out / 'timing.json'}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
