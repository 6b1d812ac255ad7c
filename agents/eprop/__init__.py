"""The spiking one-shot learner of the arm task: natural e-prop with a learning-signal generator (SPEC.md
section 2), meta-trained in PyTorch, deployed in PyTorch or brian2 with the learning network on a
:mod:`pcmeta.hardware` substrate.

Two networks: the learning network (:data:`LEARNER`: 250 LIF, 5 clock inputs, 2 angular velocities in rad/s
out) and the learning-signal generator (:data:`LSG`: 560 LIF then 240 ALIF, 53 inputs = clock and the 16-bit
code of the target path, 250 learning signals out). One task: demonstration trial -> learning signals -> ONE
e-prop update written to the learning network's weights -> test trial.

==================  ==========================================================================================
module              holds
==================  ==========================================================================================
``config``          :class:`SNNConfig`, :data:`LEARNER`, :data:`LSG`, :data:`ETA`, :data:`PARAM_KEYS`
``network``         the LIF/ALIF dynamics: :func:`run_snn`, :func:`spike_fn`, :func:`reference_step`
``rule``            natural e-prop: :func:`traces`, :func:`eprop_update`, :func:`round_to_grid`
``weights``         weight files: :func:`load_weights` (names through :mod:`pcmeta.agents.shipped`),
                    :func:`save_weights_npz`, :func:`init_params`
``episode``         :func:`one_shot_episode` (differentiable), :func:`episode_inputs`, :func:`target_tensors`
``losses``          :func:`arm_losses`, rate / voltage regularisation, :func:`meta_loss`
``voltage``         :class:`~pcmeta.agents.eprop.voltage.VoltageExtremes` (what the voltage regularisation reads)
``learner``         the learning network on a substrate: :class:`LearnerPlacement`, :class:`EpropLearner`
``brian2_engine``   the two networks in brian2: :class:`Brian2OneShot`
``evaluation``      :func:`evaluate`, :func:`evaluate_brian2`, :func:`firing_stats`, :func:`summarize`
``training``        :func:`meta_train` (BPTT through the update; resumable) and :class:`MetaTrainOptions`
``checkpoints``     run folders: :func:`load_checkpoint_params`, :func:`run_summary`
``chips``           one fresh chip of a :class:`pcmeta.hardware.Deployment` per task: :func:`chip_seed`
``agent``           :class:`EpropAgent`, the :class:`pcmeta.agents.protocol.Agent` of the arm task
==================  ==========================================================================================

Where the weights live is a :class:`pcmeta.hardware.Deployment` (presets ``Deployment.preset(name, "arm")``:
``pcm``, ``paper``, ``software``, ``pcm-hermes``, ``authors-model``). The authors' arm PCM model (their reference
row, and their training-time noise model) lives in :mod:`pcmeta.hardware.authors_arm`.
"""
from .agent import EpropAgent
from .brian2_engine import Brian2OneShot
from .chips import chip_seed
from .checkpoints import find_collapse, load_checkpoint_params, run_summary
from .config import ETA, LEARNER, LSG, PARAM_KEYS, TRAINEE_NOISE, SNNConfig
from .episode import episode_inputs, one_shot_episode, target_tensors
from .evaluation import evaluate, evaluate_brian2, firing_stats, summarize
from .learner import EpropLearner, LearnerPlacement
from .losses import (META_FIGURES, arm_losses, arm_losses_tensors, meta_loss, meta_loss_tensors,
                     rate_regularization, voltage_regularization, voltage_regularization_of)
from .network import SNNRecord, leaky_filter, no_diag, reference_step, run_snn, spike_fn
from .rule import eprop_update, round_to_grid, traces
from .clipping import CLIP_GRAD_RELATIVE, SKIP_GRAD_RELATIVE, clip_gradients
from .training import READOUT_LR_FACTOR, MetaTrainOptions, meta_train
from .weights import SHIPPED_WEIGHTS, init_params, load_weights, save_weights_npz

__all__ = [
    "SNNConfig", "LEARNER", "LSG", "ETA", "PARAM_KEYS", "TRAINEE_NOISE", "SNNRecord", "spike_fn", "run_snn",
    "reference_step", "leaky_filter", "no_diag", "traces", "eprop_update", "round_to_grid",
    "load_weights", "save_weights_npz",
    "SHIPPED_WEIGHTS", "init_params", "episode_inputs", "target_tensors", "one_shot_episode",
    "arm_losses", "arm_losses_tensors", "rate_regularization", "voltage_regularization", "voltage_regularization_of",
    "meta_loss", "meta_loss_tensors", "META_FIGURES", "LearnerPlacement", "EpropLearner", "Brian2OneShot",
    "evaluate", "evaluate_brian2", "summarize", "firing_stats", "meta_train", "MetaTrainOptions",
    "READOUT_LR_FACTOR", "CLIP_GRAD_RELATIVE", "SKIP_GRAD_RELATIVE", "clip_gradients", "load_checkpoint_params",
    "run_summary", "find_collapse", "chip_seed", "EpropAgent",
]
