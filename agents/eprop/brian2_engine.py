"""Deployment of the spiking one-shot learner in brian2: the learning network and the LSG as NeuronGroups
and Synapses with exactly the discrete-time dynamics of :mod:`pcmeta.agents.eprop.network` (SPEC section 2).

How the discrete-time model is mapped onto brian2's schedule (one brian2 time step of dt = 1 ms):

====================  =========================================================================================
slot                  what runs
====================  =========================================================================================
``start`` (order -10) the episode's boundary network operation (only at the step between the two trials)
``groups``            neuron update code (``run_regularly``): adaptation b, threshold A, presynaptic trace ebar,
                      membrane v (with the summed synaptic input ``I`` of the previous step's ``synapses`` slot
                      and the reset -A z_{t-1}), refractoriness, new spike flag z, pseudo-derivative psi; I = 0
``thresholds``        ``threshold='z > 0.5'``: the flag computed above becomes a brian2 spike event (no reset
                      code: the reset is the -A z_{t-1} term of the next update, as in the model)
``synapses``          ``on_pre: I_post += w``: spikes of this step are summed into the targets' I
``after_synapses``    leaky readouts ``y = kappa y + I`` (same-step spikes, as y_t = kappa y_{t-1} + z_t W_out);
                      then (order 1) the learning network's ``g = psi * L`` with L linked to the LSG readout
``end``               (order 2, ``accumulate="synapses"`` only) ``acc += ebar_pre * g_post`` on every synapse
                      of W_in / W_rec; (order 5) monitors record
====================  =========================================================================================

Synaptic effects land AFTER the neuron update of the step in which the spike happened, so the recurrent
input z_{t-1} W_rec is used at step t, as the model asks. External inputs x_t must also enter v_t at step t:
the input spike generators therefore emit x_t one brian2 step early, and every trial runs T + 1 brian2 steps,
the first of which computes the (all-zero) state "t = -1" (with zero input and zero state the update leaves
every variable at 0, so this step is exact). Brian2 step k thus holds model step t = k - 1; monitors drop k = 0.
The learning network's input trace ebar^in lives on a small relay group that receives the clock spikes.

The update dW = -eta sum_t ebar_t (psi_t L_t): brian2 computes psi, the traces and g = psi * L as neuron
variables at every step; by default (``accumulate="monitors"``) they are monitored and the update is their
one matrix product E^T G at the end of the demonstration (SPEC section 2: no per-synapse state is needed),
or (``accumulate="synapses"``) every synapse accumulates its own entry during the trial (same numbers,
slower). The diagonal of W_rec does not exist as a synapse (no self-connections).

Weights: the learning network's W_in, W_rec (and W_out) come from a :mod:`pcmeta.hardware` substrate when
:meth:`Brian2OneShot.episode` is given one, placed by :class:`~pcmeta.agents.eprop.learner.LearnerPlacement`
as in the torch engine: they are ``read()`` once per trial (so PCM read noise is drawn per trial, not per time
step, in brian2; the torch :class:`~pcmeta.agents.eprop.learner.EpropLearner` does one substrate MVM per time
step instead), and the update is written with ``update(dW)`` (on PCM: quantized to the update grid, changed
devices re-programmed) before being read back for the test trial.

Code generation: ``target="numpy"`` (default: no compiler needed) or ``"cython"`` (compiled once, about
2-3 minutes on 2 cores, then cached by brian2 in ~/.cython/brian_extensions). The networks are built once
and reused for every task (restored to the stored initial state before each episode); one episode is one
brian2 run, so brian2's per-run preparation is paid once per episode.
"""
from __future__ import annotations

import contextlib
import time
import types
from typing import Any, Mapping

import numpy as np
import torch

from pcmeta.hardware import Substrate, SynapticArray

from .config import ETA, LEARNER, LSG, SNNConfig
from .learner import LearnerPlacement

__all__ = ["Brian2OneShot"]

_NEURON_VARS = """
v : 1
z : 1
r : 1
b : 1
A : 1
I : 1
psi : 1
ebar : 1
beta_n : 1 (constant)
"""

_NEURON_UPDATE = """
b = rho * b + z
A = vth + beta_n * b
ebar = alpha * ebar + z
v = alpha * v + I - A * z
I = 0
free = int(r <= 0)
z = int(v > A) * free
psi = free * (gamma / vth) * clip(1 - abs(v - A) / vth, 0, 1e30)
r = clip(r + 5 * z - 1, 0, n_ref)
"""

_READOUT_VARS = """
y : 1
I : 1
"""

_READOUT_UPDATE = """
y = kappa * y + I
I = 0
"""


def _ns(cfg: SNNConfig) -> dict:
    return {"alpha": cfg.alpha, "rho": cfg.rho, "kappa": cfg.kappa, "vth": cfg.v_th, "gamma": cfg.gamma,
            "n_ref": float(cfg.n_refractory)}


def _dense_indices(n_pre: int, n_post: int, no_diag: bool) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.meshgrid(np.arange(n_pre), np.arange(n_post), indexing="ij")
    i, j = i.ravel(), j.ravel()
    if no_diag:
        keep = i != j
        i, j = i[keep], j[keep]
    return i.astype(np.int32), j.astype(np.int32)


def _spike_lists(x: np.ndarray, dt) -> tuple[np.ndarray, Any]:
    """(T, n) 0/1 inputs -> (indices, times) emitted one step early (x_t at t - 1 + 1 = brian2 step t)."""
    t_idx, n_idx = np.nonzero(np.asarray(x) > 0.5)
    order = np.lexsort((n_idx, t_idx))
    return n_idx[order].astype(np.int32), t_idx[order] * dt


@contextlib.contextmanager
def _no_gc_in_run():
    """brian2's Network.run starts with gc.collect() (only to warn about objects left out of a network); with
    torch loaded that alone costs 0.1-0.3 s per run. Our networks are explicit, so it is skipped here."""
    import brian2.core.network as bnet

    saved = bnet.gc
    bnet.gc = types.SimpleNamespace(collect=lambda *a, **k: 0)
    try:
        yield
    finally:
        bnet.gc = saved


def _float64(v: Any) -> np.ndarray:
    return (v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)).astype(np.float64)


def _read64(array: SynapticArray) -> np.ndarray:
    """The weights an array reads now, as float64 numpy."""
    w = array.read()
    return _float64(w) if torch.is_tensor(w) else np.asarray(w, dtype=np.float64)


class Brian2OneShot:
    """The two networks in brian2, built once, reused for every task.

    One :meth:`episode` is ONE brian2 run of 2 (T + 1) steps: the demonstration trial (LSG and learning
    network), then at the boundary step a network operation computes the update, writes it (to the float
    weights or to the substrate) and loads the new weights into the learning network's synapses, resets all
    neuron states to 0, and the test trial follows (the LSG receives no more input and stays silent). A
    single run keeps brian2's per-run preparation (about 0.2-0.4 s for these objects) to once per episode.

    Args:
        params: weight dict in the released layout (numpy or torch; (pre, post)).
        T: steps per trial (default 249).
        target: brian2 code-generation target, "numpy" or "cython".
        record: also monitor every neuron's z (both networks) and psi for comparisons (slower).
        accumulate: "monitors" (default): psi * L and the traces are neuron variables computed by brian2 at
            every step and monitored, and the update is their one matrix product at the end of the
            demonstration (SPEC: no per-synapse state needed); "synapses": every synapse of W_in / W_rec
            accumulates ``acc += ebar_pre * g_post`` at every step (the same numbers, slower).
        eta: e-prop learning rate.
    """

    def __init__(self, params: Mapping[str, Any], T: int = 249, target: str = "numpy", record: bool = False,
                 accumulate: str = "monitors", eta: float = ETA):
        import brian2 as b2

        if target not in ("numpy", "cython"):
            raise ValueError(f"target must be 'numpy' or 'cython', got {target!r}")
        if accumulate not in ("monitors", "synapses"):
            raise ValueError(f"accumulate must be 'monitors' or 'synapses', got {accumulate!r}")
        b2.prefs.codegen.target = target
        b2.prefs.core.default_float_dtype = np.float64
        self.b2, self.T, self.eta, self.record, self.target = b2, int(T), float(eta), record, target
        self.accumulate = accumulate
        self.params = {k: _float64(v) for k, v in params.items()}
        self.dt = 1.0 * b2.ms
        t0 = time.perf_counter()
        self.groups: dict[str, Any] = {}
        self.syn: dict[str, Any] = {}
        self._build_inputs()
        self._build_lsg()
        self._build_learner()
        self._build_monitors()
        self._boundary_fn = None
        self._boundary_out: dict = {}
        boundary = b2.NetworkOperation(self._boundary, dt=self.dt, when="start", order=-10, name="boundary")
        g, s = self.groups, self.syn
        extra = [s["s_in_acc"]] if "s_in_acc" in s else []
        self.net = b2.Network(self.in_lsg, self.in_clk, g["relay"], s["s_relay"], g["lsg"], g["lsg_out"],
                              s["s_in_lsg"], s["s_rec_lsg"], s["s_out_lsg"], g["learner"], g["learner_out"],
                              s["s_in"], s["s_rec"], s["s_out"], boundary, *extra, *self.mon.values())
        self.net.store("fresh")
        self.build_s = time.perf_counter() - t0
        self.codegen_s = None  # wall time of the first run (code generation / compilation happens there)

    # ------------------------------------------------------------------------------------------ building
    def _build_inputs(self) -> None:
        """Spike generators of both networks' inputs and the relay that holds the clock's input trace."""
        b2, dt = self.b2, self.dt
        self.in_lsg = b2.SpikeGeneratorGroup(LSG.n_in, np.zeros(0, np.int32), np.zeros(0) * b2.ms, dt=dt,
                                             name="in_lsg")
        self.in_clk = b2.SpikeGeneratorGroup(LEARNER.n_in, np.zeros(0, np.int32), np.zeros(0) * b2.ms, dt=dt,
                                             name="in_clk")
        relay = b2.NeuronGroup(LEARNER.n_in, "x : 1\nebar : 1", dt=dt, name="clk_relay", namespace=_ns(LEARNER))
        relay.run_regularly("ebar = alpha * ebar + x\nx = 0", when="groups")
        s_relay = b2.Synapses(self.in_clk, relay, on_pre="x_post = 1", dt=dt, name="s_relay")
        s_relay.connect(j="i")
        self.groups["relay"], self.syn["s_relay"] = relay, s_relay

    def _build_lsg(self) -> None:
        """The learning-signal generator (560 LIF + 240 ALIF) and its leaky readout."""
        b2, dt, P = self.b2, self.dt, self.params
        lsg = b2.NeuronGroup(LSG.n_rec, _NEURON_VARS, threshold="z > 0.5", reset="", dt=dt, name="lsg",
                             namespace=_ns(LSG))
        lsg.beta_n = np.r_[np.zeros(LSG.n_rec - LSG.n_alif), np.full(LSG.n_alif, LSG.beta)]
        lsg.run_regularly(_NEURON_UPDATE, when="groups")
        lsg_out = b2.NeuronGroup(LSG.n_out, _READOUT_VARS, dt=dt, name="lsg_out", namespace=_ns(LSG))
        lsg_out.run_regularly(_READOUT_UPDATE, when="after_synapses", order=0)
        self.groups.update(lsg=lsg, lsg_out=lsg_out)
        self.syn["s_in_lsg"] = self._synapses(self.in_lsg, lsg, P["W_in_lsg"], "s_in_lsg")
        self.syn["s_rec_lsg"] = self._synapses(lsg, lsg, P["W_rec_lsg"], "s_rec_lsg", no_diag=True)
        self.syn["s_out_lsg"] = self._synapses(lsg, lsg_out, P["W_out_lsg"], "s_out_lsg")

    def _build_learner(self) -> None:
        """The learning network (250 LIF) with g = psi * L (L linked to the LSG readout) and its readout."""
        b2, dt, P = self.b2, self.dt, self.params
        learner = b2.NeuronGroup(LEARNER.n_rec, _NEURON_VARS + "g : 1\nL : 1 (linked)", threshold="z > 0.5",
                                 reset="", dt=dt, name="learner", namespace=_ns(LEARNER))
        learner.beta_n = 0.0
        learner.L = b2.linked_var(self.groups["lsg_out"], "y")
        learner.run_regularly(_NEURON_UPDATE, when="groups")
        learner.run_regularly("g = psi * L", when="after_synapses", order=1, name="learner_g")
        learner_out = b2.NeuronGroup(LEARNER.n_out, _READOUT_VARS, dt=dt, name="learner_out",
                                     namespace=_ns(LEARNER))
        learner_out.run_regularly(_READOUT_UPDATE, when="after_synapses", order=0)
        self.groups.update(learner=learner, learner_out=learner_out)
        acc_model = "w : 1\nacc : 1" if self.accumulate == "synapses" else "w : 1"
        s_in = self._synapses(self.in_clk, learner, P["W_in_trainee"], "s_in")
        s_rec = self._synapses(learner, learner, P["W_rec_trainee"], "s_rec", no_diag=True, model=acc_model)
        self.syn.update(s_in=s_in, s_rec=s_rec, s_out=self._synapses(learner, learner_out, P["W_out_trainee"],
                                                                     "s_out"))
        if self.accumulate == "synapses":
            # The input trace lives on the relay (a generator has no state), so the input weights' update is
            # accumulated on a parallel relay -> learner synapse set without spike effects (same (i, j) layout).
            s_in_acc = b2.Synapses(self.groups["relay"], learner, "acc : 1", dt=dt, name="s_in_acc")
            s_in_acc.connect(i=s_in.i[:], j=s_in.j[:])
            s_in_acc.run_regularly("acc += ebar_pre * g_post", when="end", order=2, name="s_in_acc_ru")
            s_rec.run_regularly("acc += ebar_pre * g_post", when="end", order=2, name="s_rec_acc_ru")
            self.syn["s_in_acc"] = s_in_acc

    def _build_monitors(self) -> None:
        """State monitors of both readouts, of the update's ingredients and (``record``) of spikes and psi."""
        b2, g = self.b2, self.groups
        mon = lambda grp, v, name: b2.StateMonitor(grp, v, record=True, when="end", order=5, name=name)  # noqa
        self.mon = {"lsg_y": mon(g["lsg_out"], "y", "mon_lsg_y"),
                    "learner_y": mon(g["learner_out"], "y", "mon_learner_y")}
        if self.accumulate == "monitors":
            self.mon["learner_acc"] = mon(g["learner"], ["g", "ebar"], "mon_learner_acc")
            self.mon["relay"] = mon(g["relay"], "ebar", "mon_relay")
        if self.record:
            self.mon["lsg_z"] = mon(g["lsg"], "z", "mon_lsg_z")
            self.mon["learner"] = mon(g["learner"], ["z", "psi"], "mon_learner")
        s = self.syn
        self._lsg_objects = [self.in_lsg, g["lsg"], g["lsg_out"], s["s_in_lsg"], s["s_rec_lsg"], s["s_out_lsg"],
                             self.mon["lsg_y"]] + ([self.mon["lsg_z"]] if self.record else [])

    def _synapses(self, src, tgt, W: np.ndarray, name: str, no_diag: bool = False, model: str = "w : 1"):
        b2 = self.b2
        S = b2.Synapses(src, tgt, model, on_pre="I_post += w", dt=self.dt, name=name)
        i, j = _dense_indices(W.shape[0], W.shape[1], no_diag)
        S.connect(i=i, j=j)
        S.w = W[i, j]
        return S

    # ------------------------------------------------------------------------------------------------
    def _set_learner_weights(self, W_in: np.ndarray, W_rec: np.ndarray, W_out: np.ndarray) -> None:
        for key, W in (("s_in", W_in), ("s_rec", W_rec), ("s_out", W_out)):
            S = self.syn[key]
            S.w = np.asarray(W, dtype=np.float64)[S.i[:], S.j[:]]

    def _current_update(self, upto: int) -> tuple[np.ndarray, np.ndarray]:
        """dW_in, dW_rec from the brian2 records of brian2 steps 1..upto (model steps 0..upto-1)."""
        if self.accumulate == "monitors":
            G = self.mon["learner_acc"].g[:, 1:upto + 1].T
            E_rec = self.mon["learner_acc"].ebar[:, 1:upto + 1].T
            E_in = self.mon["relay"].ebar[:, 1:upto + 1].T
            dW_in = -self.eta * (E_in.T @ G)
            dW_rec = -self.eta * (E_rec.T @ G)
            np.fill_diagonal(dW_rec, 0.0)
            return dW_in, dW_rec
        out = []
        for key, n_pre in (("s_in_acc", LEARNER.n_in), ("s_rec", LEARNER.n_rec)):
            S = self.syn[key]
            dW = np.zeros((n_pre, LEARNER.n_rec))
            dW[S.i[:], S.j[:]] = -self.eta * S.acc[:]
            out.append(dW)
        return out[0], out[1]

    def _reset_states(self) -> None:
        """All neuron and readout states back to 0 (the start of a trial)."""
        state = {"lsg": "v z r b A I psi ebar", "learner": "v z r b A I psi ebar g", "relay": "x ebar",
                 "lsg_out": "y I", "learner_out": "y I"}
        for gname, names in state.items():
            g = self.groups[gname]
            for var in names.split():
                setattr(g, var, 0.0)

    def _boundary(self, t) -> None:
        if self._boundary_fn is None:
            return
        k = int(round(float(t / self.dt)))
        if k != self.T + 1:
            return
        dW_in, dW_rec = self._current_update(self.T)
        W_in, W_rec, W_out = self._boundary_fn(dW_in, dW_rec)
        self._boundary_out.update(dW_in=dW_in, dW_rec=dW_rec)
        self._set_learner_weights(W_in, W_rec, W_out)
        self._reset_states()

    def _run(self, n_steps: int, lsg_active: bool) -> None:
        for o in self._lsg_objects:
            o.active = lsg_active
        t0 = time.perf_counter()
        with _no_gc_in_run():
            self.net.run(n_steps * self.dt, namespace={})
        if self.codegen_s is None:
            self.codegen_s = time.perf_counter() - t0

    def _check_input(self, x: np.ndarray, n: int, name: str) -> None:
        if np.shape(x) != (self.T, n):
            raise ValueError(f"{name} must have shape ({self.T}, {n}) of 0/1 spikes, got {np.shape(x)}")

    def _prepare(self, W_in, W_rec, W_out, x_lsg: np.ndarray | None, clock: np.ndarray, repeat_clock: bool):
        P = self.params
        self.net.restore("fresh")
        self._set_learner_weights(P["W_in_trainee"] if W_in is None else W_in,
                                  P["W_rec_trainee"] if W_rec is None else W_rec,
                                  P["W_out_trainee"] if W_out is None else W_out)
        self._check_input(clock, LEARNER.n_in, "clock")
        idx, times = _spike_lists(clock, self.dt)
        if repeat_clock:  # the test trial's clock, T + 1 steps later
            idx = np.r_[idx, idx]
            times = np.r_[np.asarray(times), np.asarray(times) + float((self.T + 1) * self.dt)] * self.b2.second
        self.in_clk.set_spikes(idx, times)
        if x_lsg is not None:
            self._check_input(x_lsg, LSG.n_in, "x_lsg")
            self.in_lsg.set_spikes(*_spike_lists(x_lsg, self.dt))
        else:
            self.in_lsg.set_spikes(np.zeros(0, np.int32), np.zeros(0) * self.b2.ms)

    def demonstration(self, x_lsg: np.ndarray, clock: np.ndarray, W_in: np.ndarray | None = None,
                      W_rec: np.ndarray | None = None, W_out: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The demonstration trial alone (one run of T + 1 steps): omega_before (T, 2), L (T, 250), dW_in
        (5, 250), dW_rec (250, 250) (float64), plus z_lsg (T, 800), z_demo, psi (T, 250) when ``record``.
        W_in / W_rec / W_out default to the parameters given at construction."""
        self._prepare(W_in, W_rec, W_out, x_lsg, clock, repeat_clock=False)
        self._boundary_fn = None
        self._run(self.T + 1, True)
        dW_in, dW_rec = self._current_update(self.T)
        out = {"omega_before": self.mon["learner_y"].y[:, 1:].T.copy(), "L": self.mon["lsg_y"].y[:, 1:].T.copy(),
               "dW_in": dW_in, "dW_rec": dW_rec}
        if self.record:
            out["z_lsg"] = self.mon["lsg_z"].z[:, 1:].T.copy()
            out["z_demo"] = self.mon["learner"].z[:, 1:].T.copy()
            out["psi"] = self.mon["learner"].psi[:, 1:].T.copy()
        return out

    def test(self, clock: np.ndarray, W_in: np.ndarray, W_rec: np.ndarray, W_out: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
        """A trial of the learning network alone (LSG inactive) with the given weights: omega (T, 2)."""
        self._prepare(W_in, W_rec, W_out, None, clock, repeat_clock=False)
        self._boundary_fn = None
        self._run(self.T + 1, False)
        out = {"omega": self.mon["learner_y"].y[:, 1:].T.copy()}
        if self.record:
            out["z"] = self.mon["learner"].z[:, 1:].T.copy()
        return out

    def episode(self, x_lsg: np.ndarray, clock: np.ndarray, substrate: Substrate | None = None,
                digital_readout: bool = False, settle_s: float = 0.0, clip: float | None = None,
                query_wait_s: float = 0.0) -> dict[str, Any]:
        """Demonstration (with LSG) -> one update -> test, for one task, in one brian2 run.

        Without ``substrate`` the update is added to the float64 weights. With a substrate, the learning
        network's W_in / W_rec (and W_out unless ``digital_readout``) are placed on it
        (:class:`~pcmeta.agents.eprop.learner.LearnerPlacement`, names ``brian2.W_in`` etc., clipped to
        [-clip, clip] first if ``clip``), ``settle_s`` seconds of simulated time pass, the weights are read
        for the demonstration trial (read noise and drift drawn once per trial), the update is written with
        ``update()`` (PCM: quantized, changed devices re-programmed), ``query_wait_s`` more seconds pass and the
        weights are read back for the test trial. (A :class:`pcmeta.hardware.Deployment`'s substrate brings its
        own clip and placement rules: leave ``clip`` and ``digital_readout`` unset with one.)

        Returns omega_before, omega_after (T, 2), dW_in, dW_rec, L (T, 250), wall time ``time_s`` and, with
        ``record``, z_lsg, z_demo, z_test, psi.
        """
        P = self.params
        t0 = time.perf_counter()
        placement = None
        if substrate is None:
            W0 = (P["W_in_trainee"], P["W_rec_trainee"], P["W_out_trainee"])

            def fn(dW_in, dW_rec):
                return P["W_in_trainee"] + dW_in, P["W_rec_trainee"] + dW_rec, P["W_out_trainee"]
        else:
            placement = self.placement(clip=clip, digital_readout=digital_readout)
            arrays = placement.place(substrate)
            if settle_s:
                substrate.elapse(settle_s)
            W0 = self.read_weights(placement, arrays)

            def fn(dW_in, dW_rec):
                arrays["W_in"].update(dW_in)
                arrays["W_rec"].update(dW_rec)
                if query_wait_s:
                    substrate.elapse(query_wait_s)
                return self.read_weights(placement, arrays)
        try:
            self._prepare(*W0, x_lsg, clock, repeat_clock=True)
            self._boundary_fn = fn
            self._boundary_out = {}
            self._run(2 * (self.T + 1), True)
        finally:
            self._boundary_fn = None
            if placement is not None:
                placement.remove(substrate)
        if "dW_in" not in self._boundary_out:
            raise RuntimeError("the update step of the brian2 episode did not run")
        out = self._episode_records()
        out["time_s"] = time.perf_counter() - t0
        return out

    def placement(self, clip: float | None = None, digital_readout: bool = False) -> LearnerPlacement:
        """How this network's learning-network weights are placed on a substrate (float64, prefix "brian2")."""
        P = self.params
        return LearnerPlacement(P["W_in_trainee"], P["W_rec_trainee"], P["W_out_trainee"], dtype=torch.float64,
                                clip=clip, digital_readout=digital_readout, prefix="brian2")

    @staticmethod
    def read_weights(placement: LearnerPlacement, arrays: Mapping[str, SynapticArray]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(W_in, W_rec, W_out) as float64 numpy, read from the placed arrays once (one trial's weights)."""
        w_out = placement.readout(arrays)
        return (_read64(arrays["W_in"]), _read64(arrays["W_rec"]),
                _read64(w_out) if isinstance(w_out, SynapticArray) else _float64(w_out))

    def _episode_records(self) -> dict[str, Any]:
        """The one-run episode's outputs from the monitors (brian2 steps 1..T and T+2..2T+1)."""
        T = self.T
        y = self.mon["learner_y"].y
        out = {"omega_before": y[:, 1:T + 1].T.copy(), "omega_after": y[:, T + 2:2 * T + 2].T.copy(),
               "L": self.mon["lsg_y"].y[:, 1:T + 1].T.copy(), **self._boundary_out}
        if self.record:
            z = self.mon["learner"].z
            out["z_demo"] = z[:, 1:T + 1].T.copy()
            out["z_test"] = z[:, T + 2:2 * T + 2].T.copy()
            out["psi"] = self.mon["learner"].psi[:, 1:T + 1].T.copy()
            out["z_lsg"] = self.mon["lsg_z"].z[:, 1:T + 1].T.copy()
        return out
