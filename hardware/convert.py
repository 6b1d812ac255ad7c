"""Any PyTorch model on the simulated chip: :func:`convert`, :func:`elapse`, :func:`report`, :func:`write_updates`.

>>> import pcmeta.hardware as hw
>>> chip = hw.convert(model, hw.PCMConfig(drift_compensation="global"), seed=0)  # a converted copy
>>> hw.elapse(chip, 86400.0)          # one day of drift for every layer on the chip
>>> y = chip(x)                       # forward: the crossbar MVMs
>>> hw.report(chip)["layers"]         # what is on the chip: shapes, tiles, devices, MVMs

Supported layers: ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` (groups=1, zero padding), replaced by
:mod:`pcmeta.hardware.layers`; every other layer, and those named in ``exclude``, stays digital and is listed
in :func:`report` with the reason (layers with parameters; activations, pooling and other parameter-free
layers run digitally too and are not listed). Linear layers that ``nn.MultiheadAttention`` calls functionally (its
``out_proj``) stay digital too. All converted layers of one model share one substrate, so one
:func:`elapse` moves the whole chip's time.

On-chip fine-tuning: train the converted model with any optimizer; each forward writes the optimizer's
change of a layer's ``weight`` to its devices as programming pulses first (:func:`write_updates` does it
explicitly), with the gradient of the ideal weights (straight-through).
"""
from __future__ import annotations

import copy
import fnmatch
from typing import Iterable, Sequence

from torch import nn

from .config import PCMConfig
from .deployment import Deployment
from .layers import PCMConv1d, PCMConv2d, PCMLayer, PCMLinear, conv_unsupported, n_devices
from .pcm import PCMSubstrate
from .substrate import Substrate

__all__ = ["convert", "elapse", "report", "write_updates", "pcm_layers"]

_LAYERS = ((nn.Linear, PCMLinear), (nn.Conv2d, PCMConv2d), (nn.Conv1d, PCMConv1d))


def _substrate(config: PCMConfig | Deployment | Substrate | None, seed: int) -> Substrate:
    if config is None:
        return PCMSubstrate(PCMConfig(seed=int(seed)))
    if isinstance(config, PCMConfig):
        return PCMSubstrate(config.replace(seed=int(seed)))
    if isinstance(config, Deployment):
        return config.build(int(seed))
    if isinstance(config, Substrate):
        if config.arrays:
            raise ValueError(f"convert() needs an empty substrate; this one already holds {sorted(config.arrays)}")
        return config
    raise ValueError(f"config must be a PCMConfig, a Deployment, a Substrate or None, got {type(config).__name__}")


def _why_digital(name: str, module: nn.Module, parent: nn.Module | None, exclude: Sequence[str]) -> str | None:
    """Why a supported layer stays digital (None: it goes on the chip)."""
    if any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
        return "excluded by the caller"
    if isinstance(parent, nn.MultiheadAttention):
        return "used functionally by nn.MultiheadAttention (its weight, not its forward)"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return conv_unsupported(module)
    return None


def convert(model: nn.Module, config: PCMConfig | Deployment | Substrate | None = None, *, seed: int = 0,
            exclude: Sequence[str] = ()) -> nn.Module:
    """A copy of ``model`` with its linear and convolution layers on a simulated chip.

    Args:
        model: any ``nn.Module`` (left unchanged).
        config: a :class:`PCMConfig` (default ``PCMConfig()``), a :class:`Deployment` (its substrate, placement
            rules by layer name, ``clip``; the copy is then at the deployment's ``time_s``), or an empty
            :class:`Substrate` to place on.
        seed: seed of the chip (programming noise, drift exponents, read noise).
        exclude: ``fnmatch`` patterns of module names (as in ``model.named_modules()``) to keep digital.

    Returns:
        The converted copy (training/eval mode as ``model``). Weights are programmed at simulated time 0
        (a Deployment then moves to its ``time_s``). ``report(copy)`` lists what is on the chip.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"convert() expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    if pcm_layers(model):
        raise ValueError("model is already converted (it holds PCM layers); convert the float model")
    sub = _substrate(config, seed)
    out = copy.deepcopy(model)
    root = next((cls for base, cls in _LAYERS if isinstance(out, base)), None)
    if root is not None:  # the model is one layer
        why = _why_digital(type(out).__name__.lower(), out, None, exclude)
        if why:
            raise ValueError(f"cannot convert {type(out).__name__}: {why}")
        out = root(out, sub, type(out).__name__.lower())
    digital: list[dict] = []
    parents = {name: mod for name, mod in out.named_modules()}
    for name, module in list(out.named_modules()):
        if not name:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = parents[parent_name]
        kind = next((cls for base, cls in _LAYERS if isinstance(module, base)), None)
        why = _why_digital(name, module, parent, exclude) if kind else None
        if kind and not why:
            setattr(parent, attr, kind(module, sub, name))
        elif kind or any(True for _ in module.parameters(recurse=False)):
            n = sum(p.numel() for p in module.parameters(recurse=False))
            digital.append({"name": name, "type": type(module).__name__, "params": n,
                            "reason": why or "no crossbar mapping for this layer type"})
    if root is None and any(True for _ in out.parameters(recurse=False)):  # e.g. a policy's log_std
        digital.insert(0, {"name": "", "type": type(out).__name__,
                           "params": sum(p.numel() for p in out.parameters(recurse=False)),
                           "reason": "parameters of the model itself (used directly in its forward)"})
    out._pcmeta_digital = digital
    if isinstance(config, Deployment) and config.time_s:
        sub.elapse(config.time_s)
    return out


def pcm_layers(model: nn.Module) -> dict[str, PCMLayer]:
    """The substrate layers of a converted model, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PCMLayer)}


def _substrates(model: nn.Module) -> list[Substrate]:
    layers = pcm_layers(model)
    if not layers:
        raise ValueError("model has no PCM layers; pass a model returned by pcmeta.hardware.convert()")
    subs: list[Substrate] = []
    for layer in layers.values():
        if not any(s is layer.substrate for s in subs):
            subs.append(layer.substrate)
    return subs


def elapse(model: nn.Module, seconds: float) -> None:
    """Let ``seconds`` of simulated time pass for every layer of a converted model (drift, read noise).

    Raises ``ValueError`` for a negative or non-finite time (nothing moves) or a model without PCM layers."""
    subs = _substrates(model)
    for s in subs:
        s._time_after(seconds)  # every substrate accepts the new time before any moves
    for s in subs:
        s.elapse(seconds)


def write_updates(model: nn.Module) -> int:
    """Write pending changes of the converted layers' weights to the devices; returns the layers written."""
    return sum(layer.write_updates() for layer in pcm_layers(model).values())


def _layer_rows(layers: Iterable[tuple[str, PCMLayer]], arrays: dict) -> list[dict]:
    rows = []
    for name, layer in layers:
        st = arrays.get(layer.array_name, {})
        shape = tuple(layer.array.shape)
        rows.append({"name": name, "type": type(layer).__name__, "weight_shape": tuple(layer.weight.shape),
                     "crossbar_shape": shape, "tiles": st.get("tiles", 0), "devices": n_devices(shape),
                     "mvms": st.get("mvms", layer.array.mvms), "updates": layer.array.updates,
                     "programming_events": st.get("programming_events", 0),
                     "adc_saturations": st.get("adc_saturations", 0), "substrate": layer.substrate.kind})
    return rows


def _arrays(rep: dict) -> dict:
    """Per-array stats of a substrate report (a deployment's parts merged)."""
    arrays = dict(rep.get("arrays", {}))
    for part in rep.get("parts", {}).values():
        arrays.update(part.get("arrays", {}))
    return arrays


def report(model: nn.Module) -> dict:
    """What a converted model has on the chip and what it cost so far.

    Keys: ``time_s``; ``layers`` (per converted layer: name, type, weight and crossbar shapes, tiles, devices,
    MVMs, updates, programming events, ADC saturations); ``digital`` (layers left digital: name, type,
    parameters, reason); totals ``tiles``, ``devices``, ``mvms``, ``macs``, ``programming_events``;
    ``energy_J`` and ``latency_s`` (``{"mvm", "programming", "total"}``, estimates of
    :mod:`pcmeta.hardware.energy`; absent in software); ``substrates`` (each substrate's own report).
    Counters are those of the arrays on the chip now: loading a ``state_dict`` re-programs a layer into a
    fresh array, whose counters start at its programming.
    """
    subs = _substrates(model)
    reps = [s.report() for s in subs]
    arrays: dict = {}
    for r in reps:
        arrays.update(_arrays(r))
    layers = _layer_rows(pcm_layers(model).items(), arrays)
    out = {"time_s": subs[0].time_s, "layers": layers, "digital": list(getattr(model, "_pcmeta_digital", [])),
           "tiles": sum(r["tiles"] for r in layers), "devices": sum(r["devices"] for r in layers)}
    for key in ("mvms", "macs", "programming_events"):
        out[key] = sum(int(r.get(key, 0)) for r in reps)
    costs = [r for r in reps if isinstance(r.get("energy_J"), dict)]
    if costs:
        for key in ("energy_J", "latency_s"):
            out[key] = {k: sum(r[key][k] for r in costs) for k in ("mvm", "programming", "total")}
    out["substrates"] = reps
    return out
