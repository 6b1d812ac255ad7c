"""Any torch model on the chip: pcmeta.hardware.convert / elapse / report / write_updates / noise_aware."""
import math

import pytest
import torch
from torch import nn

import pcmeta.hardware as hw
from pcmeta.hardware import PCMConfig

torch.set_num_threads(1)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, stride=2), nn.ReLU(), nn.Conv2d(6, 4, 3, dilation=2),
                         nn.Flatten(), nn.Linear(4 * 2 * 2, 300), nn.Tanh(), nn.Linear(300, 5))


def rel_err(y, y0) -> float:
    return float((y - y0).norm() / y0.norm())


def chip_error(model, config, x, t_s=0.0, seed=0) -> float:
    chip = hw.convert(model, config, seed=seed)
    if t_s:
        hw.elapse(chip, t_s)
    with torch.no_grad():
        return rel_err(chip(x), model(x))


X = torch.randn(8, 2, 11, 11, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ideal_chip_equals_the_float_model(dtype):
    model = small_cnn().to(dtype)
    chip = hw.convert(model, PCMConfig.ideal())
    x = X.to(dtype)
    with torch.no_grad():
        y, y0 = chip(x), model(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert y.dtype == dtype and torch.allclose(y, y0, rtol=tol, atol=tol)
    # the 300 x 5 layer has 300 rows: two row tiles, partial sums added digitally
    rows = {r["name"]: r for r in hw.report(chip)["layers"]}
    assert rows["6"]["tiles"] == 2 and rows["4"]["crossbar_shape"] == (16, 300)


def test_conv1d_and_unbatched_inputs_match_torch():
    torch.manual_seed(3)
    conv = nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2)
    chip = hw.convert(conv, PCMConfig.ideal())
    x = torch.randn(2, 3, 17)
    with torch.no_grad():
        assert torch.allclose(chip(x), conv(x), atol=1e-6)
        assert torch.allclose(chip(x[0]), conv(x[0]), atol=1e-6)
        lin = nn.Linear(5, 3)
        assert torch.allclose(hw.convert(lin, PCMConfig.ideal())(torch.ones(2, 4, 5)), lin(torch.ones(2, 4, 5)),
                              atol=1e-6)


def test_gradients_are_those_of_the_ideal_weights():
    model = small_cnn()
    chip = hw.convert(model, PCMConfig(), seed=0)  # every non-ideality on
    hw.elapse(chip, 86400.0)
    # straight-through: d(sum(y * g))/dW of the chip layer equals the float layer's for the same input
    g = torch.randn(8, 300)
    h = torch.randn(8, 16)
    (model[4](h) * g).sum().backward()
    (chip[4](h) * g).sum().backward()
    assert torch.allclose(chip[4].weight.grad, model[4].weight.grad, atol=1e-5)
    assert torch.allclose(chip[4].bias.grad, model[4].bias.grad, atol=1e-5)


# -------------------------------------------------------------------------------- each non-ideality alone
def test_each_non_ideality_moves_the_error_as_the_device_model_says():
    model, x = small_cnn(), X
    ideal = PCMConfig.ideal()
    # weight quantization: 4 bits worse than 8 bits, both worse than none
    e4, e8 = chip_error(model, ideal.replace(weight_bits=4), x), chip_error(model, ideal.replace(weight_bits=8), x)
    assert e4 > 2 * e8 > 0
    # converters: more ADC (DAC) bits, less error
    assert chip_error(model, ideal.replace(adc_bits=6), x) > chip_error(model, ideal.replace(adc_bits=10), x) > 0
    assert chip_error(model, ideal.replace(dac_bits=4), x) > chip_error(model, ideal.replace(dac_bits=8), x) > 0
    # output noise: error scales with its std
    e_lo, e_hi = (chip_error(model, ideal.replace(out_noise=s), x) for s in (0.02, 0.08))
    assert 2.5 < e_hi / e_lo < 6
    # programming noise alone: an error right after programming that time does not change
    prog = ideal.replace(prog_noise_scale=1.0)
    assert chip_error(model, prog, x) > 0.01
    assert chip_error(model, prog, x, 3e7) == pytest.approx(chip_error(model, prog, x), rel=1e-9)


def test_drift_shrinks_outputs_and_global_compensation_restores_them():
    model, x = small_cnn(), X
    drift = PCMConfig.ideal(drift_scale=1.0)
    norms = []
    for t in (1.0, 86400.0, 3.15e7):
        chip = hw.convert(model, drift)
        hw.elapse(chip, t)
        with torch.no_grad():
            norms.append(float(chip[4:](torch.tanh(torch.ones(8, 16))).norm()))
    assert norms[0] > norms[1] > norms[2]  # conductances decay as ((t + t0)/t0)^-nu
    assert chip_error(model, drift.replace(drift_compensation="global"), x, 86400.0) < 0.5 * chip_error(
        model, drift, x, 86400.0)


def test_read_noise_is_fresh_per_mvm_and_grows_slowly_with_time():
    model, x = small_cnn(), X
    noisy = PCMConfig.ideal(read_noise_scale=1.0)
    chip = hw.convert(model, noisy)
    with torch.no_grad():
        assert not torch.equal(chip(x), chip(x))  # per-MVM 1/f noise
        per_time = hw.convert(model, noisy.replace(read_noise="per_time"))
        assert torch.equal(per_time(x), per_time(x))  # one sample per time point
    errs = [sum(chip_error(model, noisy, x, t, seed=s) for s in range(4)) for t in (1.0, 3.15e7)]
    # std ~ sqrt(ln((t + t0 + t_read) / (2 t_read))): 1 year vs 1 s gives a factor ~1.2, not orders of magnitude
    ratio = math.sqrt(math.log((3.15e7 + 20) / 5e-7) / math.log(21 / 5e-7))
    assert errs[1] / errs[0] == pytest.approx(ratio, rel=0.15)


# ------------------------------------------------------------------------------------ state and updates
def test_state_dict_round_trips_both_ways():
    model = small_cnn()
    chip = hw.convert(model, PCMConfig.ideal())
    assert list(chip.state_dict()) == list(model.state_dict())
    back = small_cnn()
    for p in back.parameters():
        nn.init.zeros_(p)
    back.load_state_dict(chip.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    # a float state_dict loaded into the chip is programmed afresh (not written as an update)
    other = small_cnn()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-0.5)
    arrays = [layer.array for layer in hw.pcm_layers(chip).values()]
    chip.load_state_dict(other.state_dict())
    assert all(layer.array is not a for layer, a in zip(hw.pcm_layers(chip).values(), arrays))
    assert all(layer.array.updates == 0 for layer in hw.pcm_layers(chip).values())
    with torch.no_grad():
        assert torch.allclose(chip(X), other(X), atol=1e-5)


def test_an_optimizer_step_is_written_to_the_devices_as_pulses():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))
    chip = hw.convert(model, PCMConfig(drift_compensation="global"), seed=0)
    x, target = torch.randn(64, 16), torch.randn(64, 1)
    opt = torch.optim.SGD(chip.parameters(), lr=0.2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = (chip(x) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    rep = hw.report(chip)
    assert all(r["updates"] > 0 for r in rep["layers"]) and rep["programming_events"] > 2 * 16 * 8
    # the weights after a write are what was written: placed weights + updates on the 1/16 * w_max grid
    layer = chip[0]
    hw.write_updates(chip)
    assert torch.allclose(layer.weight.detach().double().t(), layer.array.read(ideal=True).double(), atol=1e-6)
    assert hw.write_updates(chip) == 0  # nothing pending


# ------------------------------------------------------------------------------------- what stays digital
def test_unsupported_layers_stay_digital_and_are_reported():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.grouped = nn.Conv1d(8, 8, 3, groups=2, padding=1)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 3)
            self.skip = nn.Linear(8, 8)
            self.gain = nn.Parameter(torch.ones(3))

        def forward(self, tok):
            h = self.emb(tok)
            h = self.attn(h, h, h)[0]
            h = self.grouped(h.transpose(1, 2)).transpose(1, 2)
            return self.gain * self.head(self.norm(h + self.skip(h)))

    net = Net()
    chip = hw.convert(net, PCMConfig.ideal(), exclude=["skip"])
    rep = hw.report(chip)
    assert [r["name"] for r in rep["layers"]] == ["head"]
    digital = {r["name"]: r["reason"] for r in rep["digital"]}
    assert set(digital) == {"", "emb", "attn", "attn.out_proj", "grouped", "norm", "skip"}
    assert "groups=2" in digital["grouped"] and "excluded" in digital["skip"]
    assert "MultiheadAttention" in digital["attn.out_proj"]
    tok = torch.randint(0, 10, (2, 5))
    with torch.no_grad():
        assert torch.allclose(chip(tok), net(tok), atol=1e-5)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_raises_clear_errors():
    model = small_cnn()
    chip = hw.convert(model, PCMConfig())
    bad = X.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        chip(bad)
    with pytest.raises(ValueError, match=r"expects 2 input channels"):
        chip(torch.randn(1, 3, 11, 11))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 300\)"):
        chip[6](torch.randn(4, 299))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        chip[2](torch.randn(1, 6, 2, 2))
    with pytest.raises(ValueError, match="PCMConfig, a Deployment"):
        hw.convert(model, {"weight_bits": 4})
    with pytest.raises(ValueError, match="already converted"):
        hw.convert(chip)
    with pytest.raises(ValueError, match="no PCM layers"):
        hw.elapse(model, 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        hw.elapse(chip, -1.0)
    assert hw.report(chip)["time_s"] == 0.0
    with pytest.raises(ValueError, match="weight_bits"):
        PCMConfig(weight_bits=0)
    with pytest.raises(ValueError, match="finite"):
        with torch.no_grad():
            chip[6].weight[0, 0] = float("inf")
        chip[6](torch.randn(2, 300))


# --------------------------------------------------------------------------------- deployments, HWA, CUDA
def test_convert_takes_a_deployment_with_its_rules_and_time():
    model = small_cnn()
    dep = hw.Deployment("x", "pcm", {"weight_bits": 4, "w_max": 1.0}, time_s="1d",
                        placements=(hw.Placement("6", "own", {"w_max": "auto"}),))
    chip = hw.convert(model, dep, seed=2)
    rep = hw.report(chip)
    assert rep["time_s"] == 86400.0
    assert chip[6].array.w_max == 2.0 ** math.ceil(math.log2(model[6].weight.detach().abs().max().item()))
    assert chip[4].array.w_max == 1.0
    sw = hw.convert(model, hw.Deployment.preset("software", "omniglot"))
    with torch.no_grad():
        assert torch.allclose(sw(X), model(X), atol=1e-5)


def test_noise_aware_copy_trains_with_chip_noise_and_converts():
    model = small_cnn()
    hwa = hw.noise_aware(model, PCMConfig(weight_bits=4, drift_compensation="global"), seed=0)
    assert list(hwa.state_dict()) == list(model.state_dict())
    hwa.train()
    y1, y2 = hwa(X), hwa(X)
    assert not torch.allclose(y1, y2)  # a fresh chip realisation per forward
    y1.square().sum().backward()
    assert hwa[4].weight.grad is not None and torch.isfinite(hwa[4].weight.grad).all()
    hwa.eval()
    with torch.no_grad():
        assert torch.equal(hwa(X), model(X))
    chip = hw.convert(hwa, PCMConfig.ideal())
    with torch.no_grad():
        assert torch.allclose(chip(X), model(X), atol=1e-5)
    with pytest.raises(ValueError, match="t_range_s"):
        hw.noise_aware(model, t_range_s=(0.0, 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_forward_matches_cpu_statistics():
    model = small_cnn()
    chip = hw.convert(model, PCMConfig.ideal()).cuda()
    with torch.no_grad():
        y = chip(X.cuda())
    assert y.device.type == "cuda" and torch.allclose(y.cpu(), model(X), atol=1e-4)
    noisy = hw.convert(model, PCMConfig(drift_compensation="global")).cuda()
    hw.elapse(noisy, 86400.0)
    with torch.no_grad():
        err = rel_err(noisy(X.cuda()).cpu(), model(X))
    assert 0 < err < 0.5


def test_noise_aware_layers_share_one_age_per_pass_and_inject_output_noise():
    model = small_cnn()
    only_out = PCMConfig.ideal(out_noise=0.06)
    hwa = hw.noise_aware(model, only_out, seed=1).train()
    noise = hwa[0].chip_noise
    ages = []
    for m in (hwa[0], hwa[2], hwa[4], hwa[6]):
        m.register_forward_hook(lambda mod, inp, out: ages.append(noise.age_s))
    hwa(X)
    hwa(X)
    assert len(set(ages[:4])) == 1 and len(set(ages[4:])) == 1 and ages[0] != ages[4]
    with torch.no_grad():
        err = rel_err(hwa(X), model(X))
        quiet = rel_err(hw.noise_aware(model, only_out, seed=1, noise_scale=0.0).train()(X), model(X))
    assert err > 0.01 and quiet < 1e-6  # output noise alone, and no noise at noise_scale 0
    with pytest.raises(ValueError, match="noise_scale"):
        hw.noise_aware(model, noise_scale=-1.0)
