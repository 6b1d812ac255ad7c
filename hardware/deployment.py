"""Deployment: one value that says where an agent's (or a model's) weights live.

A :class:`Deployment` names the substrate kind and its configuration, the time between programming and use,
and per-array placement rules; :meth:`Deployment.build` turns it into a :class:`DeployedSubstrate`, a
:class:`~pcmeta.hardware.Substrate` that applies those rules whenever an agent calls ``place``. It is a
frozen, JSON-serialisable value (:meth:`to_dict` / :meth:`from_dict`) that every result file records.

>>> dep = Deployment.preset("pcm", family="omniglot")      # the best deployment pcmeta knows for MAML
>>> sub = dep.build(seed=0)                                  # one chip instance
>>> arr = sub.place("readout", W)                            # lands on the readout's own crossbar scale
>>> sub.elapse(dep.time_s)

Substrate kinds (``substrate``) and what ``config`` holds:

- ``"software"``: :class:`~pcmeta.hardware.SoftwareSubstrate` keyword arguments (``bits``: the paper's
  stochastic N-bit model, ``w_max``); empty = exact float.
- ``"pcm"``: :class:`~pcmeta.hardware.PCMConfig` fields (``seed`` is set per chip by :meth:`build`).
- ``"authors-arm"``: :class:`~pcmeta.hardware.AuthorsArmSubstrate` keyword arguments (``t_ratio``).

Placement rules (:class:`Placement`, first match wins, matched on the array name with :mod:`fnmatch`):
``"own"`` puts the array on its own substrate of the same kind with ``config`` overrides (e.g. its own
conductance scale ``{"w_max": "auto"}``: the smallest power of two >= max|W|); ``"digital"`` keeps it in
exact float software. Before any placement the weights are clipped to ``[-clip, clip]`` when ``clip`` is set.

Presets (:data:`PRESETS`, by family ``"omniglot"`` / ``"arm"``) share names: ``software``, ``pcm`` (the
default: the best deployment pcmeta knows for that agent), ``paper`` (the authors' conventions),
``pcm-hermes`` (IBM HERMES device statistics) and, per family, ``software-4bit`` and ``authors-model``.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

import numpy as np

from .authors_arm import AuthorsArmSubstrate
from .pcm import PCMConfig, PCMSubstrate
from .substrate import ArrayLike, Substrate, SynapticArray, SoftwareSubstrate, as_weight_tensor
from .times import parse_time

SUBSTRATES = ("software", "pcm", "authors-arm")
WHERE = ("own", "digital")
_SOFTWARE_KEYS = ("bits", "w_max")
_AUTHORS_KEYS = ("t_ratio",)
_PCM_KEYS = tuple(f.name for f in fields(PCMConfig) if f.name != "seed")


def auto_scale(W: ArrayLike) -> float:
    """``"auto"`` conductance scale of an array: the smallest power of two >= max|W| (1.0 for all-zero W)."""
    m = float(as_weight_tensor(W).detach().abs().max())
    return 2.0 ** math.ceil(math.log2(m)) if m > 0 else 1.0


def _check_config(kind: str, config: Mapping[str, Any], what: str) -> None:
    allowed = {"software": _SOFTWARE_KEYS, "pcm": _PCM_KEYS, "authors-arm": _AUTHORS_KEYS}[kind]
    bad = sorted(set(config) - set(allowed))
    if bad:
        raise ValueError(f"{what}: {bad} are not options of a {kind!r} substrate; expected some of {list(allowed)}")
    if kind == "pcm":
        PCMConfig(**{k: (1.0 if v == "auto" and k == "w_max" else v) for k, v in config.items()})
    elif kind == "software":
        SoftwareSubstrate(**config)
    else:
        AuthorsArmSubstrate(**config)


@dataclass(frozen=True)
class Placement:
    """A per-array rule of a :class:`Deployment`.

    Attributes:
        match: :mod:`fnmatch` pattern on array names (``"readout"``, ``"*.W_out"``, ``"conv*"``).
        where: ``"own"``: its own substrate of the deployment's kind, with ``config`` overriding the
            deployment's config (``{"w_max": "auto"}``: the smallest power of two >= max|W|, resolved when the
            array is first placed); ``"digital"``: exact float software (``config`` may set ``bits``).
        config: overrides, as above.
        seed_offset: the rule's substrate is seeded ``chip seed + seed_offset``.
    """

    match: str
    where: str = "own"
    config: Mapping[str, Any] = field(default_factory=dict)
    seed_offset: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.match, str) or not self.match:
            raise ValueError(f"Placement.match must be a non-empty name pattern, got {self.match!r}")
        if self.where not in WHERE:
            raise ValueError(f"Placement.where must be one of {WHERE}, got {self.where!r}")
        object.__setattr__(self, "config", dict(self.config))


@dataclass(frozen=True)
class Deployment:
    """Where the weights live: substrate kind + config, time after programming, placement rules.

    Attributes:
        name: a label (the preset's name, or "custom").
        substrate: "software", "pcm" or "authors-arm".
        config: the substrate's options (see the module docstring); ``seed`` is not one of them.
        time_s: seconds between programming the weights and adapting (drift happens in between).
        query_time_s: seconds between programming and answering the queries (None: right after adapting).
        clip: weights are clipped to [-clip, clip] before placement (None: unchanged).
        placements: per-array rules, first match wins.
    """

    name: str = "custom"
    substrate: str = "software"
    config: Mapping[str, Any] = field(default_factory=dict)
    time_s: float = 0.0
    query_time_s: float | None = None
    clip: float | None = None
    placements: tuple[Placement, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.substrate not in SUBSTRATES:
            raise ValueError(f"substrate must be one of {SUBSTRATES}, got {self.substrate!r}")
        set_(self, "config", dict(self.config))
        set_(self, "time_s", parse_time(self.time_s))
        if self.query_time_s is not None:
            set_(self, "query_time_s", parse_time(self.query_time_s))
            if self.query_time_s < self.time_s:
                raise ValueError(f"query_time_s ({self.query_time_s:g}) must be >= time_s ({self.time_s:g})")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be None or a positive finite number, got {self.clip!r}")
        rules = tuple(p if isinstance(p, Placement) else Placement(**p) for p in self.placements)
        set_(self, "placements", rules)
        _check_config(self.substrate, self.config, f"deployment {self.name!r}")
        for p in rules:
            kind = "software" if p.where == "digital" else self.substrate
            _check_config(kind, p.config if p.where == "digital" else {**self.config, **p.config},
                          f"deployment {self.name!r}, placement {p.match!r}")

    # ------------------------------------------------------------------ values
    @property
    def query_time(self) -> float:
        """Seconds between programming and the queries."""
        return self.time_s if self.query_time_s is None else self.query_time_s

    @property
    def on_chip(self) -> bool:
        """True unless the weights live in (exact or quantized) software."""
        return self.substrate != "software"

    def with_(self, **changes: Any) -> "Deployment":
        """A copy with fields changed; ``config=`` entries are merged into the config. A None value is a setting
        like any other (on PCM: an ideal converter, every array on its own scale, ...), kept as given."""
        cfg = changes.pop("config", None)
        if cfg is not None:
            changes["config"] = {**self.config, **cfg}
        return replace(self, **changes)

    def pcm_config(self, seed: int = 0, **overrides: Any) -> PCMConfig:
        """The deployment's :class:`PCMConfig` (substrate "pcm" only)."""
        if self.substrate != "pcm":
            raise ValueError(f"deployment {self.name!r} is on {self.substrate!r}, not 'pcm'")
        return PCMConfig(**{**self.config, **overrides, "seed": int(seed)})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` reads it back."""
        d = asdict(self)
        d["placements"] = [asdict(p) for p in self.placements]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Deployment":
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"unknown deployment fields {bad}; expected some of {sorted(known)}")
        return cls(**{**d, "placements": tuple(Placement(**p) for p in d.get("placements", ()))})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def describe(self) -> str:
        """One line: kind, main options, time and rules."""
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.config.items())) or "defaults"
        rules = "; ".join(f"{p.match}: {p.where} {p.config or ''}".strip() for p in self.placements)
        return (f"{self.name}: {self.substrate} ({opts}), t = {self.time_s:g} s"
                f"{f', clip {self.clip:g}' if self.clip else ''}{f'; {rules}' if rules else ''}")

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, family: str) -> "Deployment":
        """The named preset of a family ("omniglot" or "arm"); see :data:`PRESETS`."""
        if family not in PRESETS:
            raise ValueError(f"family must be one of {sorted(PRESETS)}, got {family!r}")
        try:
            return PRESETS[family][name]
        except KeyError:
            raise ValueError(f"no deployment preset {name!r} for {family}; presets: {sorted(PRESETS[family])}") from None

    # ------------------------------------------------------------------ chips
    def build(self, seed: int = 0) -> "DeployedSubstrate":
        """A fresh chip instance (or software store) of this deployment, seeded ``seed``."""
        return DeployedSubstrate(self, int(seed))


def make_substrate(kind: str, config: Mapping[str, Any], seed: int) -> Substrate:
    """A bare substrate of ``kind`` with ``config`` (see :class:`Deployment`), seeded ``seed``."""
    if kind == "software":
        return SoftwareSubstrate(**config, seed=seed)
    if kind == "pcm":
        return PCMSubstrate(PCMConfig(**config, seed=seed))
    if kind == "authors-arm":
        return AuthorsArmSubstrate(**config, seed=seed)
    raise ValueError(f"substrate must be one of {SUBSTRATES}, got {kind!r}")


class DeployedSubstrate(Substrate):
    """A :class:`Deployment` instantiated: routes each placed array to the substrate its rules name.

    The main substrate is seeded ``seed``; a rule's substrate ``seed + rule.seed_offset`` and is created when
    its first array is placed (at the current simulated time). ``elapse`` moves every part's time;
    ``report`` sums the parts' counters and costs and keeps each part's report under ``"parts"``.
    """

    kind = "deployment"

    def __init__(self, deployment: Deployment, seed: int = 0):
        super().__init__()
        self.deployment, self.seed = deployment, int(seed)
        self.main = make_substrate(deployment.substrate, deployment.config, self.seed)
        self.parts: dict[str, Substrate] = {"main": self.main}
        self._home: dict[str, Substrate] = {}

    def _rule(self, name: str) -> Placement | None:
        return next((p for p in self.deployment.placements if fnmatch.fnmatchcase(name, p.match)), None)

    def _part(self, rule: Placement, W: ArrayLike) -> Substrate:
        label = f"{rule.where}:{rule.match}"
        if label not in self.parts:
            cfg = dict(rule.config)
            if rule.where == "own":
                cfg = {**self.deployment.config, **cfg}
                if cfg.get("w_max") == "auto":
                    cfg["w_max"] = auto_scale(W)
            kind = "software" if rule.where == "digital" else self.deployment.substrate
            sub = make_substrate(kind, cfg, self.seed + rule.seed_offset)
            sub.elapse(self.time_s)
            self.parts[label] = sub
        return self.parts[label]

    def substrate_for(self, name: str, W: ArrayLike) -> Substrate:
        """The substrate an array called ``name`` is placed on."""
        rule = self._rule(name)
        return self.main if rule is None else self._part(rule, W)

    def place(self, name: str, W: ArrayLike) -> SynapticArray:
        self._check_name(name)
        clip = self.deployment.clip
        if clip is not None:
            W = np.clip(W, -clip, clip) if isinstance(W, np.ndarray) else as_weight_tensor(W).clamp(-clip, clip)
        sub = self.substrate_for(name, W)
        arr = sub.place(name, W)
        self.arrays[name], self._home[name] = arr, sub
        return arr

    def remove(self, name: str) -> None:
        self[name]
        self._home.pop(name).remove(name)
        del self.arrays[name]

    def elapse(self, seconds: float) -> None:
        total = self._time_after(seconds)
        for sub in self.parts.values():  # every part accepts the new time before any moves
            sub._time_after(seconds)
        self.time_s = total
        for sub in self.parts.values():
            sub.elapse(seconds)

    def transform(self, W, generator=None):
        return self.main.transform(W, generator)

    def report(self) -> dict:
        parts = {label: sub.report() for label, sub in self.parts.items()}
        out: dict[str, Any] = {"substrate": self.kind, "deployment": self.deployment.to_dict(), "seed": self.seed,
                               "time_s": self.time_s, "parts": parts}
        for key in ("tiles", "mvms", "macs", "programming_events"):
            out[key] = sum(r.get(key, 0) for r in parts.values())
        for key in ("energy_J", "latency_s"):  # {"mvm", "programming", "total"} on chips; absent in software
            dicts = [r[key] for r in parts.values() if isinstance(r.get(key), dict)]
            out[key] = {k: sum(d.get(k, 0.0) for d in dicts) for k in ("mvm", "programming", "total")}
        return out

    def __repr__(self) -> str:
        return f"DeployedSubstrate({self.deployment.name!r}, seed={self.seed}, parts={list(self.parts)})"


# ---------------------------------------------------------------------------------------------- presets
def _hermes(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the IBM HERMES chip's device statistics, g_max, t0 and t_read (PCMConfig.hermes)."""
    return {**config, "device": "hermes", "g_max_uS": 20.7, "t0_s": 300.0, "t_read_s": 512e-9}


#: MAML's chip (Ortner et al.'s Omniglot experiment): 4-bit programmed weights, w_max = 1 for every layer.
_OMNIGLOT_PAPER = {"weight_bits": 4, "w_max": 1.0}
#: The readout on its own crossbar scale: its 4 bits and its 1/16 update grid then span the readout's range
#: (max|w| ~ 0.08 after meta-training) instead of 1/13 of it; +3 points at 1 min, 1 day and 1 year.
_READOUT_OWN_SCALE = (Placement("readout*", "own", {"w_max": "auto"}),)
#: The authors' arm PCM conventions on the physical model (SPEC section 2): w_max = 1 for every array, the
#: update rounded to the nearest 1/16 (half to even), a changed device re-programmed to its drifted value + dW,
#: no drift compensation, the readout on PCM, read noise on every MVM, ideal converters, no output noise.
_ARM_PAPER = {"w_max": 1.0, "weight_bits": None, "update_grid": 1.0 / 16, "update_rounding": "nearest",
              "update_base": "drifted", "update_frame": "device", "dac_bits": None, "adc_bits": None,
              "out_noise": 0.0, "read_noise": "per_mvm", "drift_compensation": "none"}
#: What pcmeta's controller does better with the same devices and 1/16 step: unbiased stochastic rounding of the
#: update (nearest rounding zeroes ~95 % of its entries), every array on its own scale (w_max = max|W|), global
#: drift compensation, and the update written in the compensated frame (dW / alpha).
_ARM_PCM = {**_ARM_PAPER, "update_rounding": "stochastic", "w_max": None, "drift_compensation": "global",
            "update_frame": "compensated"}

PRESETS: dict[str, dict[str, Deployment]] = {
    "omniglot": {
        "software": Deployment("software", "software"),
        "software-4bit": Deployment("software-4bit", "software", {"bits": 4}),
        "pcm": Deployment("pcm", "pcm", _OMNIGLOT_PAPER, time_s=60.0, placements=_READOUT_OWN_SCALE),
        "paper": Deployment("paper", "pcm", _OMNIGLOT_PAPER, time_s=60.0),
        "pcm-hermes": Deployment("pcm-hermes", "pcm", _hermes(_OMNIGLOT_PAPER), time_s=60.0,
                                 placements=_READOUT_OWN_SCALE),
    },
    "arm": {
        "software": Deployment("software", "software"),
        "pcm": Deployment("pcm", "pcm", _ARM_PCM, time_s=60.0, clip=1.0),
        "paper": Deployment("paper", "pcm", _ARM_PAPER, time_s=60.0, clip=1.0),
        "pcm-hermes": Deployment("pcm-hermes", "pcm", _hermes(_ARM_PCM), time_s=60.0, clip=1.0),
        "authors-model": Deployment("authors-model", "authors-arm", {"t_ratio": 32.0}, time_s=60.0),
    },
}
