"""The deployment flags of ``pcmeta arm eval`` and ``arm demo``: ONE :class:`pcmeta.hardware.Deployment`.

``--deployment NAME|FILE.json`` names an arm preset of :data:`pcmeta.hardware.deployment.PRESETS` ("pcm": the
best deployment pcmeta knows, "paper": the authors' conventions, "software", "pcm-hermes", "authors-model") or
a deployment file; ``--time`` sets its time after programming. The older flags stay as aliases:
``--substrate software|pcm|pcm-authors`` (:data:`SUBSTRATE_ALIASES`) and ``--pcm-preset tuned|authors``
(:data:`PRESET_ALIASES`). The override flags (``--drift-compensation``, ``--update-*``, ``--w-max``,
``--compensated-update``, ``--digital-readout``, ``--no-clip``) change the deployment; the result's name then
lists them (e.g. ``pcm+digital-readout``).
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from pcmeta.demos.options import add_deployment_args, deployment_from_args

#: ``--substrate`` values and the arm presets they stand for
SUBSTRATE_ALIASES = {"software": "software", "pcm": "pcm", "pcm-authors": "authors-model"}
#: ``--pcm-preset`` values and the arm presets they stand for
PRESET_ALIASES = {"tuned": "pcm", "authors": "paper"}
#: override flags that set a :class:`pcmeta.hardware.PCMConfig` field: (argparse dest, config key)
_PCM_FLAGS = (("drift_compensation", "drift_compensation"), ("update_rounding", "update_rounding"),
              ("update_grid", "update_grid"), ("update_base", "update_base"), ("w_max", "w_max"),
              ("compensated_update", "update_frame"))


def add_arm_deployment_args(p: argparse.ArgumentParser) -> None:
    """``--deployment``, ``--time``, their aliases ``--substrate`` / ``--pcm-preset`` and the override flags."""
    add_deployment_args(p, "arm")
    p.add_argument("--substrate", choices=sorted(SUBSTRATE_ALIASES), default=None,
                   help="alias of --deployment: software (exact float), pcm (= --deployment pcm, the physical "
                        "model) or pcm-authors (= --deployment authors-model: the authors' statistical arm model at "
                        "t/t0 = 32, SPEC section 2's reference row; torch engine)")
    p.add_argument("--pcm-preset", choices=sorted(PRESET_ALIASES), default=None,
                   help="alias of --deployment: tuned (= pcm: stochastic rounding to the 1/16 device grid, "
                        "per-array w_max, global drift compensation, update in the compensated frame) or authors "
                        "(= paper: nearest rounding, no drift compensation, w_max = 1, readout on PCM)")
    p.add_argument("--digital-readout", action="store_true", default=None,
                   help="keep the fixed readout W_out digital (placement rule *.W_out -> digital)")
    p.add_argument("--drift-compensation", choices=["none", "global", "per_column"], default=None,
                   help="pcm: digital drift compensation of the MVM outputs (paper: none, pcm: global)")
    p.add_argument("--update-rounding", choices=["nearest", "stochastic"], default=None,
                   help="pcm: rounding of the update to the device grid (paper: nearest, pcm: stochastic)")
    p.add_argument("--update-grid", type=float, default=None, metavar="STEP",
                   help="pcm: update grid in units of w_max (default 1/16 = 0.0625: 1.5625 uS at g_max 25 uS)")
    p.add_argument("--update-base", choices=["drifted", "target"], default=None,
                   help="pcm: re-program a changed device to its drifted value + dW (default) or its last "
                        "target + dW")
    p.add_argument("--w-max", default=None, metavar="W|array",
                   help="pcm: weight mapped to g_max, a number or 'array' (each array's own max|W|; "
                        "paper: 1, pcm: array)")
    p.add_argument("--compensated-update", action=argparse.BooleanOptionalAction, default=None,
                   help="pcm: write the update in the drift-compensated frame (dW / alpha; pcm: on)")
    p.add_argument("--no-clip", action="store_true",
                   help="do not clip the initial weights to [-1, 1] (the authors' PCM model clips); on PCM each "
                        "array then uses its own w_max = max|W|")


def _base_name(args: argparse.Namespace, default: str) -> str:
    """The preset (or file) the flags name before overrides."""
    alias_sub = SUBSTRATE_ALIASES.get(args.substrate) if args.substrate else None
    alias_preset = PRESET_ALIASES.get(args.pcm_preset) if args.pcm_preset else None
    if args.deployment and (alias_sub or alias_preset):
        raise ValueError("give --deployment or its aliases --substrate / --pcm-preset, not both")
    if alias_preset and alias_sub not in (None, "pcm"):
        raise ValueError(f"--pcm-preset {args.pcm_preset} is a PCM deployment: it needs --substrate pcm, "
                         f"not {args.substrate}")
    return args.deployment or alias_preset or alias_sub or default


def _w_max(text: str) -> float | None:
    if str(text).lower() == "array":
        return None
    try:
        w = float(text)
    except ValueError:
        raise ValueError(f"--w-max must be a positive number or 'array', got {text!r}") from None
    if not w > 0:
        raise ValueError(f"--w-max must be a positive number or 'array', got {text!r}")
    return w


def _pcm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The PCMConfig fields the override flags set."""
    cfg: dict[str, Any] = {}
    for dest, key in _PCM_FLAGS:
        val = getattr(args, dest)
        if val is None:
            continue
        if dest == "w_max":
            val = _w_max(val)
        elif dest == "compensated_update":
            val = "compensated" if val else "device"
        cfg[key] = val
    return cfg


def arm_deployment(args: argparse.Namespace, default: str):
    """The ONE :class:`pcmeta.hardware.Deployment` of ``arm eval`` / ``arm demo``: the named preset (or file,
    or alias; ``default`` without any), ``--time``, then the override flags. ValueError for an override that does
    not apply to the deployment's substrate."""
    from pcmeta.hardware.deployment import Placement

    dep = deployment_from_args(args, "arm", _base_name(args, default))
    changed = [d.replace("_", "-") for d, _ in _PCM_FLAGS if getattr(args, d) is not None]
    cfg = _pcm_overrides(args)
    if cfg:
        if dep.substrate != "pcm":
            raise ValueError(f"{', '.join('--' + c for c in changed)}: PCM options, but deployment {dep.name!r} is "
                             f"on {dep.substrate!r} (use --deployment pcm, paper or pcm-hermes)")
        dep = replace(dep, config={**dep.config, **cfg})
    if args.no_clip:  # no clipping, and on PCM each array on its own scale (w_max = max|W|)
        dep = replace(dep, clip=None, config={**dep.config, "w_max": None} if dep.substrate == "pcm" else dep.config)
        changed.append("no-clip")
    if args.digital_readout:
        if not dep.on_chip:
            raise ValueError(f"--digital-readout: deployment {dep.name!r} keeps every weight in software already")
        dep = replace(dep, placements=(Placement("*.W_out", "digital"), *dep.placements))
        changed.append("digital-readout")
    return replace(dep, name="+".join([dep.name, *changed])) if changed else dep


def describe(dep) -> str:
    """One line on the deployment for the printed header (PCM: rounding, grid, compensation, w_max, readout)."""
    from pcmeta.hardware.times import format_time

    if dep.substrate != "pcm":
        return dep.describe()
    c = dep.pcm_config()
    digital = any(p.where == "digital" and p.match == "*.W_out" for p in dep.placements)
    frame = c.update_frame == "compensated" and c.drift_compensation != "none"
    return (f"{dep.name} (t = {format_time(dep.time_s)}): update {c.update_rounding} to {c.update_grid:g} w_max, "
            f"base {c.update_base}, drift compensation {c.drift_compensation}, "
            f"w_max {'per array' if c.w_max is None else f'{c.w_max:g}'}, "
            f"readout {'digital' if digital else 'on PCM'}{', update in the compensated frame' if frame else ''}"
            f"{'' if dep.clip else ', no clipping'}")
