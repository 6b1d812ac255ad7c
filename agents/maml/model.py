"""The meta-learner :class:`MAML`: parameters, config, the substrate of meta-training, evaluation, deployment."""
from __future__ import annotations

import os

import torch

from pcmeta.files import WeightsFileError

from .config import CONV_KEYS, MAMLConfig
from .deployed import DeployedCNN
from .inner import meta_loss
from .network import Transform, init_params
from .weights import WHAT, check_params, load_checkpoint, load_weights


class MAML:
    """The meta-learner: parameters, config and the substrate its weight matrices live on.

    Args:
        cfg: hyper-parameters.
        params: initial parameters (default :func:`init_params`).
        substrate: a :mod:`pcmeta.hardware` substrate whose ``transform`` realises the weight matrices in
            the forward pass (None: exact float, equivalent to ``SoftwareSubstrate()``; with ``cfg.bits``
            set and no substrate, ``SoftwareSubstrate(bits=cfg.bits)`` is created).
        seed: initialisation seed.
    """

    def __init__(self, cfg: MAMLConfig, params: dict | None = None, substrate=None, seed: int = 0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        p = params if params is not None else init_params(cfg, seed, dtype)
        self.params = {k: torch.nn.Parameter(v.detach().to(self.device, dtype).clone()) for k, v in p.items()}
        if substrate is None and cfg.train_substrate == "pcm":
            from pcmeta.hardware import PCMConfig, PCMSubstrate

            substrate = PCMSubstrate(PCMConfig(weight_bits=cfg.bits, w_max=1.0, seed=seed))
            substrate.elapse(float(cfg.train_time_s))  # transform() realises the weights at this time
        elif substrate is None and cfg.bits is not None:
            from pcmeta.hardware import SoftwareSubstrate

            substrate = SoftwareSubstrate(bits=int(cfg.bits), seed=seed)
        self.substrate = substrate

    @property
    def transform(self) -> Transform | None:
        return None if self.substrate is None else self.substrate.transform

    @classmethod
    def from_weights(cls, path: str | os.PathLike | None = None, cfg: MAMLConfig | None = None, **kw) -> "MAML":
        """Load weights (released layout or :func:`save_weights`); ``cfg`` overrides the stored one.

        ``path``: a ``.npz`` path, the name of a shipped file (``"paper_5w5s"``, ``"classic_5w1s"``, ...),
        ``"authors"`` (the authors' released weights in ``$PCMETA_REFERENCE_DIR``) or None (the default shipped
        file); see :func:`pcmeta.agents.shipped.resolve_weights`."""
        from pcmeta.agents.shipped import resolve_weights

        path = resolve_weights(path, "omniglot")
        params, stored = load_weights(path)
        c = cfg or stored
        if c is None:
            raise WeightsFileError(path, "holds no config_json (pcmeta's layout needs one)",
                                   "a file written by save_weights, or pass cfg=MAMLConfig(...)", WHAT)
        if cfg is not None:  # the stored config was checked by load_weights; the one asked for must fit too
            try:
                check_params(params, cfg, path)
            except WeightsFileError as exc:
                raise WeightsFileError(path, f"{exc.problem}: it does not hold the network the config asks for "
                                             f"({cfg.arch} CNN, C={cfg.channels}, {cfg.n_way}-way)", exc.expected,
                                       WHAT) from None
        return cls(c, params, **kw)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kw) -> "MAML":
        """The model of a ``ckpt.pt`` written by ``pcmeta omniglot train`` (its config and parameters), checked
        through :func:`pcmeta.files.load_checkpoint`."""
        params, cfg = load_checkpoint(path)
        return cls(cfg, params, **kw)

    def meta_loss(self, sx, sy, qx, qy, steps=None, first_order=None):
        return meta_loss(self.params, sx, sy, qx, qy, self.cfg, steps, first_order, self.transform)

    @torch.no_grad()
    def evaluate(self, sx, sy, qx, qy, steps: int | None = None) -> torch.Tensor:
        """Query accuracy per task (T,) after ``steps`` (default: the config's test steps) inner steps."""
        steps = self.cfg.test_steps if steps is None else steps
        if int(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if self.cfg.adapt == "head":
            _, acc = meta_loss(self.params, sx, sy, qx, qy, self.cfg, steps, True, self.transform)
            return acc
        with torch.enable_grad():
            _, acc = meta_loss({k: v.detach().requires_grad_() for k, v in self.params.items()}, sx, sy, qx,
                               qy, self.cfg, steps, True, self.transform)
        return acc.detach()

    def deployable_params(self) -> dict:
        """The (detached) parameters :meth:`deploy` places. A model meta-trained with the fixed-range quantizer
        (``cfg.bits``) is deployed with the weights that quantizer represents: its full-precision shadow
        weights clipped to [-1, 1] (the quantizer saturates there, levels -1 .. 1 - 2/2^bits; the shadow can
        drift past it in training without changing the model). Only the matrices the quantizer acted on
        (``cfg.quantize``) are clipped."""
        params = {k: v.detach() for k, v in self.params.items()}
        if self.cfg.bits is not None:
            keys = CONV_KEYS + (("readout",) if self.cfg.quantize == "all" else ())
            params = {k: (v.clamp(-1.0, 1.0) if k in keys else v) for k, v in params.items()}
        return params

    def deploy(self, substrate, prefix: str = "") -> "DeployedCNN":
        """Place :meth:`deployable_params` on ``substrate`` (conv layers as im2col matrices, the readout),
        named ``prefix + "conv1"`` ... ``prefix + "readout"``."""
        return DeployedCNN(self.cfg, self.deployable_params(), substrate, prefix)

