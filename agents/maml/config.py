"""MAML hyper-parameters: :class:`MAMLConfig`, the named training presets and which parameters are adapted."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

ARCHS = ("paper", "classic")
ADAPT = ("head", "all")
#: The weight matrices that live on a substrate, in forward order.
MATRIX_KEYS = ("conv1", "conv2", "conv3", "conv4", "readout")
CONV_KEYS = MATRIX_KEYS[:4]


@dataclass
class MAMLConfig:
    """Network and meta-learning hyper-parameters (defaults: the paper's 5-way 5-shot setting).

    Attributes:
        arch: ``"paper"`` or ``"classic"``.
        channels: convolution channels C (paper 56, classic 64).
        n_way: classes per task (readout width).
        inner_steps: SGD steps of the inner loop during meta-training.
        eval_inner_steps: SGD steps at evaluation (None: same as ``inner_steps``).
        inner_lr: inner-loop learning rate.
        adapt: ``"head"`` (readout only; paper) or ``"all"`` (every parameter; classic MAML).
        first_order: drop second-order terms of the meta-gradient.
        bn_eps: batch-norm epsilon.
        meta_lr: Adam learning rate of the outer loop.
        meta_batch: tasks per meta-iteration.
        k_shot, n_query: support and query images per class during meta-training.
        iterations: meta-iterations.
        split: ``"paper"`` or ``"classic"`` data split.
        bits: None for float, or the weight bits of ``SoftwareSubstrate(bits=...)`` used in the forward
            pass during meta-training (straight-through).
        quantize: which matrices pass through the substrate transform in training: ``"all"`` (conv
            layers and readout) or ``"conv"`` (the readout stays exact, e.g. a digital readout).
        train_substrate: ``"software"`` (``SoftwareSubstrate(bits)``) or ``"pcm"``: noise-aware
            meta-training with ``PCMSubstrate(PCMConfig(weight_bits=bits, w_max=1)).transform`` in the forward
            pass (programming noise, drift to ``train_time_s`` after programming, read noise; fresh draws on
            every forward; straight-through gradient).
        train_time_s: time after programming of the PCM model used by ``train_substrate="pcm"`` (s).
    """

    arch: str = "paper"
    channels: int = 56
    n_way: int = 5
    inner_steps: int = 4
    eval_inner_steps: int | None = None
    inner_lr: float = 0.1
    adapt: str = "head"
    first_order: bool = False
    bn_eps: float = 1e-3
    meta_lr: float = 1e-3
    meta_batch: int = 32
    k_shot: int = 5
    n_query: int = 5
    iterations: int = 30000
    split: str = "paper"
    bits: int | None = None
    quantize: str = "all"
    train_substrate: str = "software"
    train_time_s: float = 86400.0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.adapt not in ADAPT:
            raise ValueError(f"unknown adapt {self.adapt!r}; expected one of {ADAPT}")
        if self.split not in ("paper", "classic"):
            raise ValueError(f"unknown split {self.split!r}; expected 'paper' or 'classic'")
        for name in ("channels", "n_way", "meta_batch", "k_shot", "n_query", "iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_steps < 0:
            raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
        if self.train_substrate not in ("software", "pcm"):
            raise ValueError(f"train_substrate must be 'software' or 'pcm', got {self.train_substrate!r}")
        if self.quantize not in ("all", "conv"):
            raise ValueError(f"quantize must be 'all' or 'conv', got {self.quantize!r}")
        if self.bits is not None and int(self.bits) < 1:
            raise ValueError(f"bits must be None or >= 1, got {self.bits}")

    @property
    def test_steps(self) -> int:
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MAMLConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


#: Training presets (``pcmeta omniglot train --preset NAME``).
PRESETS: dict[str, dict] = {
    # Ortner et al.: 4 SGD steps lr 0.1 on the readout, second order, Adam 1e-3, meta-batch 32, 30k its.
    "paper-5w5s": dict(arch="paper", channels=56, n_way=5, k_shot=5, n_query=5, inner_steps=4, inner_lr=0.1,
                       adapt="head", meta_batch=32, iterations=30000, split="paper"),
    "paper-5w1s": dict(arch="paper", channels=56, n_way=5, k_shot=1, n_query=5, inner_steps=4, inner_lr=0.1,
                       adapt="head", meta_batch=32, iterations=30000, split="paper"),
    # Finn et al. 2017: 5-way 1 step lr 0.4 (3 at test), meta-batch 32; 20-way 5 steps lr 0.1, batch 16.
    "classic-5w1s": dict(arch="classic", channels=64, n_way=5, k_shot=1, n_query=1, inner_steps=1,
                         eval_inner_steps=3, inner_lr=0.4, adapt="all", meta_batch=32, iterations=60000,
                         split="classic"),
    "classic-20w1s": dict(arch="classic", channels=64, n_way=20, k_shot=1, n_query=1, inner_steps=5,
                          eval_inner_steps=5, inner_lr=0.1, adapt="all", meta_batch=16, iterations=60000,
                          split="classic"),
}


def preset(name: str, **overrides) -> MAMLConfig:
    """The :class:`MAMLConfig` of a preset, with ``overrides`` (None values ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    d = dict(PRESETS[name])
    d.update({k: v for k, v in overrides.items() if v is not None})
    return MAMLConfig(**d)


def head_keys(cfg: MAMLConfig) -> tuple[str, ...]:
    """The readout parameters of the architecture (what ``adapt="head"`` adapts)."""
    return ("readout",) if cfg.arch == "paper" else ("readout", "readout_bias")


def adapted_keys(cfg: MAMLConfig, params: dict) -> tuple[str, ...]:
    """The names of the parameters the inner loop adapts (the head, or every one of ``params``)."""
    return head_keys(cfg) if cfg.adapt == "head" else tuple(params)
