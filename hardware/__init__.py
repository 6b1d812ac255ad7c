"""Synaptic substrates: exact software and a simulated phase-change-memory (PCM) crossbar.

>>> from pcmeta.hardware import SoftwareSubstrate, PCMSubstrate, PCMConfig
>>> sub = PCMSubstrate(PCMConfig(weight_bits=4, seed=0))
>>> arr = sub.place("layer", W)    # W: (in_features, out_features)
>>> y = arr.matmul(x)              # x: (..., in_features)

Imports nothing else of pcmeta.
"""
from .devices import DEVICES, HermesDevice, PCMLikeDevice
from .energy import ENERGY, estimate_cost
from .pcm import PCMArray, PCMConfig, PCMSubstrate
from .substrate import SoftwareArray, SoftwareSubstrate, Substrate, SynapticArray, stochastic_quantize

__all__ = [
    "Substrate", "SynapticArray", "SoftwareSubstrate", "SoftwareArray", "PCMSubstrate", "PCMArray", "PCMConfig",
    "stochastic_quantize", "PCMLikeDevice", "HermesDevice", "DEVICES", "ENERGY", "estimate_cost",
]
