"""The MAML CNN placed on a substrate: crossbar inference (im2col matrices) and on-substrate readout adaptation."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import CONV_KEYS, MAMLConfig
from .network import pool


class DeployedCNN:
    """Inference and adaptation with the weight matrices placed on a substrate.

    Each conv layer is placed as its im2col matrix (9 C_in, C_out) and computed as
    ``arr.matmul(patches)`` with patches from :func:`torch.nn.functional.unfold` (stride 2, symmetric
    padding 1); ReLU, batch-norm and pooling are digital (so are the classic CNN's batch-norm scale and shift
    and its readout bias). The readout (C, N) is placed too and adapted with ``arr.update(-lr * grad)``
    (:meth:`adapt`); :meth:`reset_head` re-places it at its meta-learned initial value before each new task.
    Parameters adapted elsewhere (e.g. every layer, in software) are written with :meth:`write` and undone
    with :meth:`reset`. Batch-norm statistics come from the current pass (``stats=None``) or from a stored
    pass (``stats`` returned by :meth:`features`, e.g. the support set's, to classify a single query image).
    """

    def __init__(self, cfg: MAMLConfig, params: dict, substrate, prefix: str = "") -> None:
        self.cfg, self.substrate, self.prefix = cfg, substrate, prefix
        self.params = {k: v.detach().clone() for k, v in params.items()}
        self.arrays = {k: substrate.place(prefix + k, self.params[k]) for k in CONV_KEYS}
        self.bn = {k: v.clone() for k, v in self.params.items() if k.startswith("bn")}
        self.head = None
        self.reset_head()

    def reset_head(self) -> None:
        """(Re)place the readout and its bias at the meta-learned initial values."""
        name = self.prefix + "readout"
        if self.head is not None and name in self.substrate:
            self.substrate.remove(name)
        self.head = self.substrate.place(name, self.params["readout"].clone())
        self.bias = self.params.get("readout_bias", None)
        if self.bias is not None:
            self.bias = self.bias.clone()

    def reset(self) -> None:
        """Every parameter back to its meta-learned value: the conv layers and the readout re-placed (programmed
        afresh), the digital batch-norm scale and shift restored."""
        for k in CONV_KEYS:
            self.substrate.remove(self.prefix + k)
            self.arrays[k] = self.substrate.place(self.prefix + k, self.params[k])
        self.bn = {k: v.clone() for k, v in self.params.items() if k.startswith("bn")}
        self.reset_head()

    def weights(self) -> dict:
        """The parameters as the network holds them now: each matrix as its substrate realises it
        (``arr.read()``, a torch tensor), the digital ones as they are."""
        w = {k: torch.as_tensor(arr.read()) for k, arr in self.arrays.items()}
        w["readout"] = torch.as_tensor(self.head.read())
        if self.bias is not None:
            w["readout_bias"] = self.bias
        return {**w, **self.bn}

    @torch.no_grad()
    def write(self, params: dict, start: dict) -> None:
        """Move the network from ``start`` (e.g. :meth:`weights`) to ``params`` (e.g. the inner loop's result):
        each matrix by ``arr.update(params[k] - start[k])``, the digital parameters set. Keys absent from
        ``params`` are left alone."""
        for k, v in params.items():
            if k in CONV_KEYS:
                self.arrays[k].update(v - start[k])
            elif k == "readout":
                self.head.update(v - start[k])
            elif k == "readout_bias":
                self.bias = v.clone()
            elif k in self.bn:
                self.bn[k] = v.clone()
            else:
                raise KeyError(f"{k!r} is not a parameter of this network; expected some of {sorted(self.params)}")

    def conv(self, h: torch.Tensor, k: str) -> torch.Tensor:
        """Conv layer ``k`` on h (n, C_in, H, W) through ``arr.matmul`` on im2col patches."""
        n, _, H, W = h.shape
        Ho, Wo = (H + 2 - 3) // 2 + 1, (W + 2 - 3) // 2 + 1
        cols = F.unfold(h, 3, padding=1, stride=2).transpose(1, 2)  # (n, L, 9 C_in)
        y = self.arrays[k].matmul(cols)  # (n, L, C_out)
        return y.transpose(1, 2).reshape(n, -1, Ho, Wo)

    @torch.no_grad()
    def features(self, x: torch.Tensor, stats: list | None = None) -> tuple[torch.Tensor, list]:
        """Pooled features of images x and the per-layer BN statistics used.

        ``x`` is (n, 1, 28, 28): one pass, one set of batch statistics; or (T, n, 1, 28, 28): T tasks
        whose images go through the crossbars together (one ``matmul`` per layer) while each task keeps
        its own batch statistics; the features are then (T, n, C).
        """
        tasks = x.shape[:-4] if x.ndim == 5 else None
        if tasks is not None:
            x = x.reshape(-1, *x.shape[-3:])
        T = 1 if tasks is None else int(np.prod(tasks))
        h, used = x, []
        for i, k in enumerate(CONV_KEYS, start=1):
            z = self.conv(h, k)
            if self.cfg.arch == "paper":
                z = torch.relu(z)
            zt = z.reshape(T, -1, *z.shape[1:])  # (T, n, C, H, W)
            if stats is None:
                mu = zt.mean(dim=(1, 3, 4), keepdim=True)
                var = (zt - mu).square().mean(dim=(1, 3, 4), keepdim=True)
            else:
                mu, var = stats[i - 1]
            used.append((mu, var))
            z = ((zt - mu) * torch.rsqrt(var + self.cfg.bn_eps)).reshape(z.shape)
            if self.cfg.arch == "classic":
                z = torch.relu(z * self.bn[f"bn{i}_scale"][:, None, None] + self.bn[f"bn{i}_shift"][:, None, None])
            h = z
        f = pool(h, self.cfg)
        return (f if tasks is None else f.reshape(*tasks, -1, f.shape[-1])), used

    @torch.no_grad()
    def logits(self, f: torch.Tensor) -> torch.Tensor:
        y = self.head.matmul(f)
        return y + self.bias if self.bias is not None else y

    @torch.no_grad()
    def adapt(self, sx: torch.Tensor, sy: torch.Tensor, steps: int | None = None,
              lr: float | None = None, reset: bool = True) -> list:
        """Reset the readout (unless ``reset=False``), then ``steps`` SGD steps on the support set (n, 1, 28, 28),
        (n,).

        Only the readout (and bias) is adapted, through ``arr.update``; returns the support BN stats.
        """
        steps = self.cfg.test_steps if steps is None else steps
        lr = self.cfg.inner_lr if lr is None else lr
        if reset:
            self.reset_head()
        f, stats = self.features(sx)
        Y = F.one_hot(sy, self.cfg.n_way).to(f.dtype)
        for _ in range(steps):
            G = (torch.softmax(self.logits(f), -1) - Y) / f.shape[0]
            self.head.update(-lr * (f.t() @ G))
            if self.bias is not None:
                self.bias = self.bias - lr * G.sum(0)
        return stats

    @torch.no_grad()
    def predict(self, qx: torch.Tensor, stats: list | None = None) -> torch.Tensor:
        """Logits (n, N) of query images (n, 1, 28, 28); BN from this pass unless ``stats`` is given."""
        f, _ = self.features(qx, stats)
        return self.logits(f)
