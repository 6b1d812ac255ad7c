"""A complete pcmeta agent, written only against the public protocol, with its weights on the chip.

Run it through the benchmark harness (from the repository root, or with this folder on PYTHONPATH):

    PYTHONPATH=examples pcmeta benchmark run --agent benchmark_agent:make_agent \\
        --benchmark omniglot-5w5s-v0 --deployment pcm --time 1d --tasks 100 --json my_agent.json

or from Python::

    from pcmeta.agents.benchmark import run
    from benchmark_agent import make_agent
    record = run(make_agent(), "omniglot-5w5s-v0", deployment="pcm", time="1d", tasks=100)

The learner (no meta-learning, so a baseline to beat): a fixed random projection of the 784 pixels to 128
features (a crossbar, programmed once in ``deploy``), centred on the task's mean support feature (digital),
then nearest class mean in feature space; the centred class means are written to a second crossbar
("prototypes", re-programmed for every task in ``adapt``, scaled into the chip's weight range with a digital
gain: a deployment maps a fixed weight range to g_max and refuses larger weights), so a query's score for class c is
``2 f . m_c - |m_c|^2`` (= minus the squared distance up to a constant), computed as one crossbar MVM plus a
digital bias. (Centring matters on a chip: uncentred, the classes differ by a few % of a large common
score, which the crossbar's noise swamps.) Every number the agent computes with goes through the
deployment's substrate: on PCM it sees programming noise, drift, read noise and the converters.

The protocol (:class:`pcmeta.agents.Agent`): ``deploy(deployment, seed)``, ``adapt(task)``,
``predict(task) -> (Q, N) scores``, ``reset()``. ``task`` is an :class:`pcmeta.tasks.episodes.OmniglotTask`
without its answers: ``support_x`` (N*K, 28, 28), ``support_y`` (N*K,), ``query_x`` (Q, 28, 28), ``n_way``.
"""
from __future__ import annotations

import numpy as np


class ProjectionPrototypes:
    """Random-projection features on a crossbar + nearest class mean on a second crossbar."""

    def __init__(self, features: int = 128, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        # fixed projection (784, features): a crossbar of 784 rows x `features` columns, scaled to use the
        # chip's weight range (pcmeta's Omniglot presets map |w| = 1 to g_max; 4-bit levels are k/8): with
        # unit-norm columns instead (|w| ~ 0.04) most weights would round to 0 on a 4-bit chip
        P = rng.standard_normal((28 * 28, features))
        self.projection = 0.875 * P / np.abs(P).max()
        self.substrate = None
        self.readout = None
        self.bias: np.ndarray | None = None
        self.center: np.ndarray | None = None
        self.scale = 1.0

    # ------------------------------------------------------------------------------------ the protocol
    def deploy(self, deployment, seed: int = 0) -> None:
        """A fresh chip of ``deployment``; the projection is programmed now; time passes as it says."""
        self.substrate = deployment.build(seed)
        self.substrate.place("projection", self.projection)
        if deployment.time_s:
            self.substrate.elapse(deployment.time_s)

    def adapt(self, task) -> None:
        f = self._features(task.support_x)                               # (N*K, F)
        self.center = f.mean(0)                                          # digital: the task's mean feature
        f = f - self.center
        means = np.stack([f[task.support_y == c].mean(0) for c in range(task.n_way)])  # (N, F)
        self.reset()
        R = 2.0 * means.T                                                # (F, N)
        self.scale = np.abs(R).max() / 0.875                             # into the chip's range, digital gain
        self.readout = self.substrate.place("prototypes", R / self.scale)
        self.bias = -(means ** 2).sum(1)                                 # digital

    def predict(self, task) -> np.ndarray:
        if self.readout is None:
            raise RuntimeError("predict() before adapt()")
        return self.scale * self.readout.matmul(self._features(task.query_x) - self.center) + self.bias

    def reset(self) -> None:
        if self.readout is not None:
            self.substrate.remove("prototypes")
            self.readout = None

    # ------------------------------------------------------------------------------------------ helpers
    def _features(self, images: np.ndarray) -> np.ndarray:
        x = images.reshape(len(images), -1).astype(np.float64)
        return self.substrate["projection"].matmul(x)


def make_agent() -> ProjectionPrototypes:
    """The factory ``pcmeta benchmark run --agent benchmark_agent:make_agent`` calls."""
    return ProjectionPrototypes()
