"""pcmeta: learning-to-learn on simulated phase-change-memory (PCM) in-memory computing.

Subpackages (each a top-level folder of the repository):

- :mod:`pcmeta.hardware` -- the synaptic substrates: exact software and a simulated PCM crossbar.
- :mod:`pcmeta.tasks` -- task families and data (Omniglot few-shot, arm target trajectories).
- :mod:`pcmeta.envs` -- Gymnasium environments (``pcmeta/OmniglotFewShot-v0``, ``pcmeta/ArmTrajectory-v0``).
- :mod:`pcmeta.agents` -- MAML and the natural e-prop spiking learner.
- :mod:`pcmeta.demos` -- the ``pcmeta`` command line and end-to-end runs.
"""

__version__ = "0.1.0"
