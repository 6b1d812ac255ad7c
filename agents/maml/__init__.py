"""MAML for few-shot image classification, with weight matrices on a :mod:`pcmeta.hardware` substrate.

One module per concept:

- :mod:`.config`: :class:`MAMLConfig`, the training presets (:func:`preset`), which parameters are adapted;
- :mod:`.network`: the functional CNNs (paper and classic): parameters, conv blocks, batch-norm, features;
- :mod:`.ops`: custom autograd ops with direct double backwards (grouped convolution, training batch-norm);
- :mod:`.inner`: the inner loop and the vectorised meta-objective (:func:`meta_loss`, :func:`adapt_head`, the
  grouped and vmap all-parameter paths, the per-task reference loop :func:`meta_loss_loop`);
- :mod:`.weights`: loading and saving weights (released layout, pcmeta's layout, :data:`WEIGHTS_DIR`);
- :mod:`.model`: the meta-learner :class:`MAML`;
- :mod:`.deployed`: :class:`DeployedCNN`, the network placed on a substrate;
- :mod:`.evaluation`: :func:`evaluate` and :func:`mean_ci95`;
- :mod:`.chip`: the paper's hardware protocol on a :class:`~pcmeta.hardware.Deployment` (:func:`evaluate_on_chip`,
  :func:`chip_cost`, :func:`place_readout`, :data:`READOUT`);
- :mod:`.training`: meta-training (:class:`Trainer`) and :func:`bench_meta_iterations`;
- :mod:`.agent`: :class:`MAMLAgent`, the :class:`pcmeta.agents.Agent` protocol (and gym-style ``act``).
"""
from .agent import MAMLAgent
from .chip import READOUT, chip_cost, evaluate_on_chip, place_readout
from .config import ADAPT, ARCHS, CONV_KEYS, MATRIX_KEYS, PRESETS, MAMLConfig, adapted_keys, head_keys, preset
from .deployed import DeployedCNN
from .evaluation import evaluate, mean_ci95
from .inner import adapt_head, meta_loss, meta_loss_loop
from .model import MAML
from .network import (Transform, batch_norm, conv_block, features, forward, init_params, kernel_from_matrix,
                      matrix_from_kernel, readout, rescale_conv_to_range)
from .training import Trainer, TrainState, bench_meta_iterations
from .weights import WEIGHTS_DIR, load_weights, params_from_released, save_released, save_weights

__all__ = [
    "ADAPT", "ARCHS", "CONV_KEYS", "MATRIX_KEYS", "PRESETS", "WEIGHTS_DIR",
    "MAMLConfig", "preset", "head_keys", "adapted_keys",
    "Transform", "init_params", "rescale_conv_to_range", "kernel_from_matrix", "matrix_from_kernel",
    "batch_norm", "conv_block", "features", "readout", "forward",
    "adapt_head", "meta_loss", "meta_loss_loop",
    "params_from_released", "save_released", "save_weights", "load_weights",
    "MAML", "DeployedCNN", "MAMLAgent", "evaluate", "mean_ci95",
    "READOUT", "evaluate_on_chip", "chip_cost", "place_readout",
    "Trainer", "TrainState", "bench_meta_iterations",
]
