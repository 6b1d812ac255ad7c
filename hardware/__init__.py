"""Synaptic substrates: exact software and a simulated phase-change-memory (PCM) crossbar.

>>> from pcmeta.hardware import SoftwareSubstrate, PCMSubstrate, PCMConfig
>>> sub = PCMSubstrate(PCMConfig(weight_bits=4, seed=0))
>>> arr = sub.place("layer", W)    # W: (in_features, out_features)
>>> y = arr.matmul(x)              # x: (..., in_features)

Modules (after IBM aihwkit's inference split): :mod:`.devices` (device statistics: programming noise, drift,
1/f read noise), :mod:`.mapping` (weights <-> conductances, w_max, quantization, programming),
:mod:`.periphery` (tiles, DAC/ADC, the MVM pipeline), :mod:`.compensation` (drift compensation),
:mod:`.config` (:class:`PCMConfig`), :mod:`.pcm` (:class:`PCMArray`, :class:`PCMSubstrate`), :mod:`.authors_arm`
(the authors' arm PCM model), :mod:`.energy` (cost estimate), :mod:`.substrate` (the abstraction and exact
software weights), :mod:`.deployment` (where an agent's weights live), :mod:`.layers` / :mod:`.convert` (any
torch model on the chip: :func:`convert`, :func:`elapse`, :func:`report`), :mod:`.noise_aware` (hardware-aware
training for any model). Imports nothing else of pcmeta.
"""
from .authors_arm import AuthorsArmArray, AuthorsArmSubstrate
from .config import PCMConfig
from .convert import convert, elapse, pcm_layers, report, write_updates
from .deployment import DeployedSubstrate, Deployment, Placement
from .devices import DEVICES, AuthorsArmDevice, HermesDevice, PCMLikeDevice
from .energy import ENERGY, estimate_cost
from .layers import PCMConv1d, PCMConv2d, PCMLayer, PCMLinear
from .noise_aware import ChipNoise, noise_aware
from .pcm import PCMArray, PCMSubstrate
from .substrate import SoftwareArray, SoftwareSubstrate, Substrate, SynapticArray, stochastic_quantize

__all__ = [
    "Substrate", "SynapticArray", "SoftwareSubstrate", "SoftwareArray", "PCMSubstrate", "PCMArray", "PCMConfig",
    "AuthorsArmSubstrate", "AuthorsArmArray", "stochastic_quantize", "PCMLikeDevice", "HermesDevice",
    "AuthorsArmDevice", "DEVICES", "ENERGY", "estimate_cost", "Deployment", "Placement", "DeployedSubstrate",
    "convert", "elapse", "report", "write_updates", "pcm_layers", "noise_aware", "ChipNoise", "PCMLayer",
    "PCMLinear", "PCMConv1d", "PCMConv2d",
]
