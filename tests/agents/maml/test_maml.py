"""MAML: vectorised meta-gradients vs a per-task loop, released weights, substrate path, training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcmeta.agents import maml as M
from pcmeta.hardware import SoftwareSubstrate
from pcmeta.tasks.omniglot import TaskSampler, class_pool



@pytest.fixture(scope="module")
def paper_test_pool(omniglot_dir):
    return class_pool("paper", "test", omniglot_dir)


@pytest.fixture(scope="module")
def released(reference_dir):
    return reference_dir / "authors_omniglot_maml.npz"


def _grads(fn, params):
    P = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss, acc = fn(P)
    return loss.detach(), acc, torch.autograd.grad(loss, list(P.values()))


@pytest.mark.parametrize("arch_preset,adapt,vectorise", [
    ("paper-5w5s", "head", "grouped"), ("classic-5w1s", "all", "grouped"), ("classic-5w1s", "all", "vmap"),
    ("paper-5w5s", "all", "grouped"), ("paper-5w5s", "all", "vmap")])
@pytest.mark.parametrize("first_order", [False, True])
def test_vectorised_meta_gradient_equals_per_task_loop(omniglot_dir, arch_preset, adapt, vectorise, first_order,
                                                      monkeypatch):
    """float64: batched (head), grouped-conv or vmap (all) meta-gradients equal a per-task loop to 1e-5.

    The vectorised paths use the native batch-norm kernel (head), batch_norm_train with its closed-form double
    backward (grouped) or the written-out formula (vmap); the loop uses the native kernel or the formula, never
    the same code as the side it is compared with."""
    cfg = M.preset(arch_preset, first_order=first_order, channels=16, inner_steps=2, adapt=adapt)
    pool = class_pool(cfg.split, "train", omniglot_dir)
    sx, sy, qx, qy = TaskSampler(pool, cfg.n_way, cfg.k_shot, 2, seed=0).sample(3).torch(dtype=torch.float64)
    p = M.init_params(cfg, 0, torch.float64)
    g = torch.Generator().manual_seed(1)
    p = {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in p.items()}
    l1, a1, g1 = _grads(lambda P: M.meta_loss(P, sx, sy, qx, qy, cfg, vectorise=vectorise), p)
    # the same in chunks of tasks (CPU speed-up) must not change anything
    monkeypatch.setattr(M.network, "CHUNK_IMAGES", 2 * sx.shape[1])
    monkeypatch.setattr(M.inner, "CHUNK_TASK_IMAGES", 2 * (sx.shape[1] + qx.shape[1]))
    l3, a3, g3 = _grads(lambda P: M.meta_loss(P, sx, sy, qx, qy, cfg, vectorise=vectorise), p)
    assert l3.item() == pytest.approx(l1.item(), rel=1e-12)
    for a, b in zip(g1, g3):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    l2, a2, g2 = _grads(lambda P: M.meta_loss_loop(P, sx, sy, qx, qy, cfg, native_bn=vectorise == "vmap"), p)
    assert l1.item() == pytest.approx(l2.item(), rel=1e-10)
    torch.testing.assert_close(a1, a2)
    for (k, x), y in zip(p.items(), g2):
        assert torch.linalg.norm(dict(zip(p, g1))[k] - y) <= 1e-5 * torch.linalg.norm(y) + 1e-12, k
    # second order really differs from first order (the test would notice a silently dropped term)
    if not first_order:
        cfg_fo = M.preset(arch_preset, first_order=True, channels=16, inner_steps=2, adapt=adapt)
        _, _, gfo = _grads(lambda P: M.meta_loss(P, sx, sy, qx, qy, cfg_fo), p)
        assert max((a - b).abs().max().item() for a, b in zip(g1, gfo)) > 1e-6


def test_grouped_meta_gradient_with_a_weight_transform_equals_loop(omniglot_dir):
    """The grouped path with a substrate transform (weights stay im2col matrices, transformed per pass) gives
    the per-task loop's second-order meta-gradient (float64, 1e-5)."""
    cfg = M.preset("classic-5w1s", channels=8, inner_steps=2)
    pool = class_pool(cfg.split, "train", omniglot_dir)
    sx, sy, qx, qy = TaskSampler(pool, cfg.n_way, cfg.k_shot, 2, seed=1).sample(3).torch(dtype=torch.float64)
    p = M.init_params(cfg, 0, torch.float64)
    tf = lambda W: W * 0.9 + 0.3 * W ** 2  # noqa: E731  (a differentiable elementwise stand-in)
    _, _, g1 = _grads(lambda P: M.meta_loss(P, sx, sy, qx, qy, cfg, transform=tf), p)
    _, _, g2 = _grads(lambda P: M.meta_loss_loop(P, sx, sy, qx, qy, cfg, transform=tf), p)
    _, _, g0 = _grads(lambda P: M.meta_loss(P, sx, sy, qx, qy, cfg), p)
    for k, a, b, c in zip(p, g1, g2, g0):
        assert torch.linalg.norm(a - b) <= 1e-5 * torch.linalg.norm(b) + 1e-12, k
    assert max((a - c).abs().max().item() for a, c in zip(g1, g0)) > 1e-4  # the transform is really applied


@pytest.mark.parametrize("name,overrides,tasks", [
    ("classic-5w1s", {}, 16), ("paper-5w5s", dict(adapt="all", channels=32, inner_steps=2), 4)])
def test_grouped_meta_gradient_is_accurate_in_float32(omniglot_dir, name, overrides, tasks):
    """float32 meta-gradients of the grouped path are within 1e-4 (relative, per parameter) of float64, as the
    per-task loop's are (~1e-6 / 1e-5). torch's channels-last batch-norm statistics alone gave 1e-2 / 0.2 here."""
    cfg = M.preset(name, **overrides)
    pool = class_pool(cfg.split, "train", omniglot_dir)
    data = TaskSampler(pool, cfg.n_way, cfg.k_shot, cfg.n_query, seed=0).sample(tasks).torch(dtype=torch.float64)
    p = M.init_params(cfg, 0, torch.float64)
    g = torch.Generator().manual_seed(1)
    p = {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in p.items()}
    l64, _, g64 = _grads(lambda P: M.meta_loss(P, *data, cfg), p)
    data32 = [t.float() if t.is_floating_point() else t for t in data]
    l32, _, g32 = _grads(lambda P: M.meta_loss(P, *data32, cfg), {k: v.float() for k, v in p.items()})
    assert l32.item() == pytest.approx(l64.item(), rel=1e-5)
    for k, a, b in zip(p, g32, g64):
        assert torch.linalg.norm(a.double() - b) <= 1e-4 * torch.linalg.norm(b), k


def test_grouped_conv_third_derivative_and_batch_norm_limits():
    """conv2d_grouped stays differentiable beyond second order (equal to F.conv2d, also when the incoming gradient
    has another memory format than the input); batch_norm_train's double backward refuses to be differentiated
    (its closed form treats the statistics as constants) and one value per channel is refused as F.batch_norm does."""
    from pcmeta.agents.maml.ops import batch_norm_train
    from pcmeta.agents.maml.ops import conv2d_grouped

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 7, 7, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w0 = torch.randn(8, 2, 3, 3, generator=g, dtype=torch.float64)
    R0 = torch.randn(2, 8, 4, 4, generator=g, dtype=torch.float64)
    A, B = torch.randn_like(x0), torch.randn_like(w0)
    C, D = torch.randn_like(x0), torch.randn_like(w0)

    def third(conv):
        x, w, R = (t.clone().requires_grad_() for t in (x0, w0, R0))
        gx, gw = torch.autograd.grad((conv(x, w) * R).sum(), [x, w], create_graph=True)
        dx, dw = torch.autograd.grad((gx * A).sum() + (gw * B).sum(), [x, w], create_graph=True)
        return torch.autograd.grad((dx * C).sum() + (dw * D).sum(), [R])[0]

    torch.testing.assert_close(third(lambda x, w: conv2d_grouped(x, w, 2, 1, 2)),
                               third(lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=2)))
    x = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.ones(4, dtype=torch.float64, requires_grad=True)
    y = batch_norm_train(x, w, torch.zeros_like(w), 1e-3)
    gx, = torch.autograd.grad((y.sin()).sum(), [x], create_graph=True)
    torch.autograd.grad((gx ** 2).sum(), [x])  # second order: fine
    with pytest.raises(RuntimeError, match="cannot be differentiated again"):
        torch.autograd.grad((gx ** 2).sum(), [x], create_graph=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_train(torch.randn(1, 4, 1, 1), torch.ones(4), torch.zeros(4), 1e-3)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("groups,x_grad", [(1, True), (3, True), (3, False)])
def test_grouped_conv_double_backward(groups, x_grad, channels_last):
    """conv2d_grouped: gradcheck/gradgradcheck, and F.conv2d's own first and second derivatives (float64),
    in NCHW and channels-last; outputs and input gradients keep the input's memory format."""
    from pcmeta.agents.maml.ops import conv2d_grouped

    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 2 * groups, 7, 7, generator=g, dtype=torch.float64).contiguous(memory_format=cl)
    w = torch.randn(4 * groups, 2, 3, 3, generator=g, dtype=torch.float64).contiguous(memory_format=cl)
    x.requires_grad_(x_grad)
    w.requires_grad_()
    f = lambda x, w: conv2d_grouped(x, w, stride=2, padding=1, groups=groups)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))
    inputs = [w, x] if x_grad else [w]

    def second(fn):
        z = fn(x, w)
        gs = torch.autograd.grad((z.tanh() ** 2).sum(), inputs, create_graph=True)
        return (z,) + gs + torch.autograd.grad(sum((v * v.sin()).sum() for v in gs), inputs)

    got = second(f)
    want = second(lambda x, w: F.conv2d(x, w, stride=2, padding=1, groups=groups))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert got[0].is_contiguous(memory_format=cl)
    if x_grad:
        assert got[2].is_contiguous(memory_format=cl)


@pytest.mark.parametrize("shape,channels_last", [((3, 4, 5, 5), False), ((3, 4, 5, 5), True), ((7, 3), False)])
def test_closed_form_batch_norm_double_backward(shape, channels_last):
    """batch_norm_train: the native forward/backward and a hand-written double backward; finite differences
    (gradgradcheck) and the native op's own double backward agree; channels-last stays channels-last."""
    from pcmeta.agents.maml.ops import batch_norm_train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_()
    f = lambda x, w, b: batch_norm_train(x, w, b, 1e-3)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))

    def second(fn):
        y = fn(x, w, b)
        L = (y.sin() * torch.linspace(-1, 2, y.numel(), dtype=y.dtype).reshape(y.shape)).sum()
        gx, gw, gb = torch.autograd.grad(L, (x, w, b), create_graph=True)
        return (gx, gw, gb) + torch.autograd.grad((gx**2).sum() + (gw**3).sum() + (gb * w).sum(), (x, w, b))

    native = second(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-3))
    got = second(f)
    for a, b_ in zip(got, native):
        torch.testing.assert_close(a, b_, rtol=1e-9, atol=1e-9)
    if channels_last:
        assert f(x, w, b).is_contiguous(memory_format=torch.channels_last)
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_double_backward_float32_with_large_mean_gradients(channels_last):
    """float32 second derivatives with an incoming gradient of large per-channel mean (10, spread 0.1) and an input
    of mean 3: within 5e-5 of float64 (F.batch_norm's own: ~1e-5 NCHW, ~1e-3 channels-last, measured)."""
    from pcmeta.agents.maml.ops import batch_norm_train

    g = torch.Generator().manual_seed(0)
    shape = (20, 16, 14, 14)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64) + 3
    R0 = torch.randn(shape, generator=g, dtype=torch.float64) * 0.1 + 10
    A0 = torch.randn(shape, generator=g, dtype=torch.float64)
    w0, b0, B0 = (torch.randn(16, generator=g, dtype=torch.float64) for _ in range(3))

    def second(dtype):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x, R, A = (t.to(dtype).contiguous(memory_format=fmt) for t in (x0, R0, A0))
        x = x.requires_grad_()
        w, b = w0.to(dtype).requires_grad_(), b0.to(dtype).requires_grad_()
        gx, gw, _ = torch.autograd.grad((batch_norm_train(x, w, b, 1e-3) * R).sum(), [x, w, b], create_graph=True)
        return torch.autograd.grad((gx * A).sum() + (gw * B0.to(dtype)).sum(), [x, w])

    for a, b in zip(second(torch.float32), second(torch.float64)):
        assert torch.linalg.norm(a.double() - b) <= 5e-5 * torch.linalg.norm(b)


def test_fused_task_batch_norm_equals_formula():
    z = torch.randn(4 * 6, 8, 5, 5, dtype=torch.float64)
    want = M.batch_norm(z.view(4, 6, 8, 5, 5), 1e-3).reshape(24, 8, 5, 5)
    torch.testing.assert_close(M.network.batch_norm_tasks(z, 4, 1e-3), want)
    # batch statistics: every (task, channel) is normalised to mean 0, variance v/(v+eps)
    out = M.network.batch_norm_tasks(z, 4, 1e-3).view(4, 6, 8, 5, 5)
    torch.testing.assert_close(out.mean(dim=(1, 3, 4)), torch.zeros(4, 8, dtype=torch.float64))


def test_released_weights_reproduce_the_paper(paper_test_pool, released):
    """Acceptance 2 on 300 tasks (the 1,000-task run is marked slow)."""
    m = M.MAML.from_weights(released)
    a5 = M.evaluate(m, TaskSampler(paper_test_pool, 5, 5, 5, seed=0), 300)
    a1 = M.evaluate(m, TaskSampler(paper_test_pool, 5, 1, 5, seed=0), 300)
    assert abs(a5.mean() - 0.978) < 0.01
    assert abs(a1.mean() - 0.874) < 0.03
    # the released readout is a symmetric start: without inner steps, chance
    a0 = M.evaluate(m, TaskSampler(paper_test_pool, 5, 5, 5, seed=0), 100, steps=0)
    assert abs(a0.mean() - 0.2) < 0.03


@pytest.mark.slow
def test_released_weights_1000_tasks(paper_test_pool, released):
    m = M.MAML.from_weights(released)
    for k, want, tol in ((5, 0.978, 0.003), (1, 0.874, 0.007)):
        acc, ci = M.mean_ci95(M.evaluate(m, TaskSampler(paper_test_pool, 5, k, 5, seed=0), 1000))
        assert abs(acc - want) < tol + ci


def test_released_layout_roundtrip(tmp_path, released):
    m = M.MAML.from_weights(released)
    M.save_weights(m.params, m.cfg, tmp_path / "w.npz")
    with np.load(released) as a, np.load(tmp_path / "w.npz") as b:
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    m2 = M.MAML.from_weights(tmp_path / "w.npz")
    assert m2.cfg == m.cfg
    cfg = M.preset("classic-5w1s", channels=8)
    p = M.init_params(cfg, 3)
    M.save_weights(p, cfg, tmp_path / "c.npz")
    p2, cfg2 = M.load_weights(tmp_path / "c.npz")
    assert cfg2 == cfg and all(torch.equal(p[k], p2[k]) for k in p)


def test_bad_weights_and_configs(tmp_path, released):
    with pytest.raises(FileNotFoundError):
        M.MAML.from_weights(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", kernel1=np.zeros((3, 3, 1, 4)))
    with pytest.raises(ValueError, match="kernel2"):
        M.params_from_released(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="20-way"):
        M.MAML.from_weights(released, M.MAMLConfig(n_way=20))
    with pytest.raises(ValueError, match="unknown preset"):
        M.preset("paper-5w10s")
    with pytest.raises(ValueError, match="unknown arch"):
        M.MAMLConfig(arch="resnet")
    with pytest.raises(ValueError, match="unknown adapt"):
        M.MAMLConfig(adapt="body")


def test_im2col_substrate_path_equals_conv2d(paper_test_pool, released):
    """Each conv layer as its (9 C_in, C_out) matrix on a SoftwareSubstrate, run with arr.matmul."""
    m = M.MAML.from_weights(released)
    sub = SoftwareSubstrate()
    dep = m.deploy(sub)
    assert sub["conv2"].shape == (504, 56) and sub["conv1"].shape == (9, 56) and sub["readout"].shape == (56, 5)
    sx, sy, qx, qy = TaskSampler(paper_test_pool, 5, 5, 5, seed=2).sample(1).torch()
    f_sub, _ = dep.features(sx[0])
    with torch.no_grad():
        f_ref = M.features(m.params, sx[0], m.cfg)
        ad = M.adapt_head(m.params, M.features(m.params, sx, m.cfg), sy, m.cfg, 4)
        logits_ref = M.readout(ad, M.features(m.params, qx, m.cfg), m.cfg)[0]
    torch.testing.assert_close(f_sub, f_ref, atol=1e-5, rtol=1e-5)
    dep.adapt(sx[0], sy[0], 4)
    torch.testing.assert_close(dep.predict(qx[0]), logits_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dep.head.read(), ad["readout"][0], atol=1e-5, rtol=1e-5)
    # a second task starts again from the meta-learned readout
    dep.adapt(sx[0], sy[0], 0)
    torch.testing.assert_close(dep.head.read(), m.params["readout"].detach())


def test_classic_evaluate_adapts_all_parameters(omniglot_dir):
    cfg = M.preset("classic-5w1s", channels=8)
    m = M.MAML(cfg, seed=0)
    pool = class_pool("classic", "test", omniglot_dir)
    sx, sy, qx, qy = TaskSampler(pool, 5, 1, 1, seed=0).sample(4).torch()
    acc = m.evaluate(sx, sy, qx, qy)
    assert acc.shape == (4,) and not acc.requires_grad and ((acc >= 0) & (acc <= 1)).all()
    # evaluation with 3 steps equals the loop reference (accuracy per task)
    _, acc_loop = M.meta_loss_loop({k: v.detach().requires_grad_() for k, v in m.params.items()},
                                   sx, sy, qx, qy, cfg, steps=3, first_order=True)
    torch.testing.assert_close(acc, acc_loop)


def test_classic_deployed_path_equals_functional(omniglot_dir):
    cfg = M.preset("classic-5w1s", channels=8)
    m = M.MAML(cfg, seed=1)
    pool = class_pool("classic", "test", omniglot_dir)
    sx, sy, qx, qy = TaskSampler(pool, 5, 1, 3, seed=0).sample(1).torch()
    dep = m.deploy(SoftwareSubstrate(), prefix="c/")
    with torch.no_grad():
        want = M.forward(m.params, qx[0], cfg)
    torch.testing.assert_close(dep.predict(qx[0]), want, atol=1e-5, rtol=1e-5)


def test_four_bit_forward_quantizes_and_trains(omniglot_dir):
    cfg = M.preset("paper-5w5s", bits=4, meta_batch=2, channels=8)
    m = M.MAML(cfg, seed=0)
    assert m.substrate is not None and m.substrate.bits == 4
    W = m.transform(m.params["conv2"])
    assert torch.all(torch.isin(torch.round(W.detach() * 8), torch.arange(-8, 8, dtype=W.dtype)))
    pool = class_pool("paper", "train", omniglot_dir)
    sx, sy, qx, qy = TaskSampler(pool, 5, 5, 5, seed=0).sample(2).torch()
    loss, _ = m.meta_loss(sx, sy, qx, qy)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in m.params.values())


def test_quantize_conv_keeps_the_readout_exact():
    cfg = M.preset("paper-5w5s", bits=4, quantize="conv", channels=8)
    m = M.MAML(cfg, seed=0)
    f = torch.randn(3, 7, 8)
    W = torch.randn(8, 5) * 0.01
    torch.testing.assert_close(M.readout({"readout": W}, f, cfg, m.transform), f @ W)
    cfg_all = M.preset("paper-5w5s", bits=4, channels=8)
    assert not torch.allclose(M.readout({"readout": W}, f, cfg_all, m.transform), f @ W)
    with pytest.raises(ValueError, match="quantize"):
        M.preset("paper-5w5s", quantize="readout")


@pytest.mark.parametrize("name,bits", [("paper-5w5s", None), ("paper-5w5s", 4), ("classic-5w1s", None)])
def test_training_resumes_with_identical_results(tmp_path, omniglot_dir, name, bits):
    """classic-5w1s runs the grouped all-parameter inner loop (channels-last, custom double backwards)."""
    cfg = M.preset(name, meta_batch=2, channels=8, iterations=4, bits=bits)
    # bits=4: the interrupted run validates at its last iteration (2) and the uninterrupted one does not;
    # validation must not disturb the quantizer's random stream
    kw = dict(data_dir=omniglot_dir, seed=3, checkpoint_every=2, eval_every=2 if bits is None else 3,
              eval_tasks=4, log_every=1)
    a = M.Trainer(cfg, tmp_path / "a", **kw)
    a.train(progress=False)
    b = M.Trainer(cfg, tmp_path / "b", **kw)
    b.train(iterations=2, progress=False)  # "interrupted" after the checkpoint at iteration 2
    c = M.Trainer(cfg, tmp_path / "b", **kw)
    assert c.resume() and c.state.iteration == 2
    c.train(progress=False)
    for k in a.model.params:
        assert torch.equal(a.model.params[k], c.model.params[k]), k
    if bits is None:
        assert a.state.history == [{**h, "s_per_it": a.state.history[i]["s_per_it"]}
                                   for i, h in enumerate(c.state.history)]
    with np.load(tmp_path / "a" / "weights.npz") as wa, np.load(tmp_path / "b" / "weights.npz") as wb:
        assert sorted(wa.files) == sorted(wb.files)
        for k in wa.files:
            np.testing.assert_array_equal(wa[k], wb[k])
    # a checkpoint of another config is refused
    other = M.Trainer(M.preset("classic-20w1s" if name == "paper-5w5s" else "paper-5w1s", meta_batch=2, channels=8,
                               bits=bits), tmp_path / "b", **kw)
    with pytest.raises(ValueError, match="different config"):
        other.resume()


def test_training_improves_on_chance(tmp_path, omniglot_dir):
    cfg = M.preset("paper-5w5s", meta_batch=4, channels=16, iterations=30)
    tr = M.Trainer(cfg, tmp_path, omniglot_dir, seed=0, eval_every=0, log_every=10)
    out = tr.train(progress=False)
    assert out["history"][-1]["acc"] > 0.5
    assert (tmp_path / "ckpt.pt").is_file() and (tmp_path / "train.log").is_file()


def test_cli_eval_json_and_errors(tmp_path, omniglot_dir, released, capsys):
    from pcmeta.demos.cli import main

    out = tmp_path / "r.json"
    rc = main(["omniglot", "eval", "--weights", str(released), "--shots", "5", "--tasks", "20",
               "--data-dir", str(omniglot_dir), "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert set(r) >= {"accuracy", "ci95", "tasks"} and r["tasks"] == 20 and 0.85 < r["accuracy"] <= 1.0
    assert "accuracy" in capsys.readouterr().out
    assert main(["omniglot", "eval", "--weights", str(released), "--split", "nope", "--tasks", "2",
                 "--data-dir", str(omniglot_dir)]) == 2
    assert main(["omniglot", "eval", "--weights", str(released), "--ways", "20", "--tasks", "2",
                 "--data-dir", str(omniglot_dir)]) == 2
    assert main(["omniglot", "train", "--preset", "nope", "--run-dir", str(tmp_path / "x")]) == 2
    assert main(["omniglot", "eval", "--weights", str(released), "--tasks", "2",
                 "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown split" in err and "5-way readout" in err and "unknown preset" in err and "pcmeta data omniglot" in err


def test_bench_reports_both_implementations(omniglot_dir, monkeypatch):
    monkeypatch.setenv("PCMETA_DATA_DIR", str(omniglot_dir))
    r = M.bench_meta_iterations(M.preset("paper-5w5s", meta_batch=2, channels=8), iterations=1)
    assert r["vectorised_it_s"] > 0 and r["loop_it_s"] > 0
    assert r["loss_diff"] < 1e-4  # same tasks, same objective


def test_shipped_weights_are_the_default_and_score(tmp_path, omniglot_dir, capsys):
    """`pcmeta omniglot eval` without --weights/--checkpoint uses agents/weights/paper_5w5s.npz."""
    from pcmeta.demos.cli import main

    assert (M.WEIGHTS_DIR / "paper_5w5s.npz").is_file() and (M.WEIGHTS_DIR / "paper_5w5s.md").is_file()
    out = tmp_path / "r.json"
    assert main(["omniglot", "eval", "--tasks", "200", "--data-dir", str(omniglot_dir), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["weights"].endswith("paper_5w5s.npz") and r["accuracy"] > 0.975


def test_shipped_classic_weights_by_name(tmp_path, omniglot_dir):
    """`--weights classic_5w1s` finds the shipped classic MAML weights (with their .md) and they score >= 97 %
    on 200 classic test tasks (1,000 tasks: 99.10 %)."""
    from pcmeta.demos.cli import main

    assert (M.WEIGHTS_DIR / "classic_5w1s.npz").is_file() and (M.WEIGHTS_DIR / "classic_5w1s.md").is_file()
    out = tmp_path / "r.json"
    assert main(["omniglot", "eval", "--weights", "classic_5w1s", "--shots", "1", "--queries", "1", "--tasks", "200",
                 "--data-dir", str(omniglot_dir), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["weights"].endswith("classic_5w1s.npz") and r["split"] == "classic" and r["accuracy"] > 0.97
