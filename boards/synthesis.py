"""Synthesis, place and route and bitstream of a design on a board, with clock closure.

:func:`synthesize` builds ``make_top(pll)`` (the design for a given :class:`PLLSettings`) with
Yosys, nextpnr and the packer, and returns what place and route achieved.

Clocking:

- A requested clock: the PLL is set to the highest frequency it can make at or below the
  request, the design is built once, and if nextpnr's post-route fmax is below it
  :class:`TimingError` is raised (the result, with ``timing_met`` false, is attached so that a
  report can still be written).
- No request, ECP5, and a design in which nothing but the PLL depends on the clock
  (``retunable``): one place and route with the PLL at the board's ``fabric_limit_mhz`` (so
  that nextpnr's timing-driven placement aims high); the routed design meets timing at any
  clock up to its fmax, so the PLL's divider words in nextpnr's text configuration are set to
  the highest frequency at or below that fmax (:func:`boards.clocks.retune_ecp5_config`: only
  those words change, not one placement or route) before ``ecppack``.
- No request otherwise (iCE40): a search of complete builds; each pass sets the PLL to the
  highest frequency at or below the fmax the previous pass achieved, until timing is met (at
  most ``max_passes``).

Every build uses nextpnr's ``--seed`` (default 1): the same design gives the same bitstream.

Routing (ECP5): ``router="auto"`` takes nextpnr's timing-driven ``router1`` for a design that
fills at most :data:`ROUTER1_MAX_LUT_SHARE` of the device's LUTs (the estimate, before any tool
runs) and ``router2`` for a fuller one (see :func:`choose_router`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from boards.clocks import PLLSettings, pll_output_range, pll_settings, retune_ecp5_config
from boards.toolchain import Flow, read_nextpnr_report, sha256_file

__all__ = ["ROUTERS", "SynthesisResult", "TimingError", "choose_router", "clock_range_mhz",
           "synthesize", "utilization_summary"]

#: nextpnr's BEL types, by the name the reports use.
RESOURCE_NAMES = {
    "ecp5": {"luts": "TRELLIS_COMB", "flip_flops": "TRELLIS_FF", "block_rams": "DP16KD",
             "multipliers": "MULT18X18D", "lutram_write_ports": "TRELLIS_RAMW",
             "io": "TRELLIS_IO", "plls": "EHXPLLL"},
    "ice40": {"luts": "ICESTORM_LC", "block_rams": "ICESTORM_RAM", "multipliers": "ICESTORM_DSP",
              "io": "SB_IO", "plls": "ICESTORM_PLL", "single_port_rams": "ICESTORM_SPRAM"},
}

_BITSTREAM_SUFFIX = {"ecp5": ".bit", "ice40": ".bin"}

#: nextpnr-ecp5's ``--placer-heap-timingweight``: how much the placer weighs timing against
#: wire length.
PLACER_TIMING_WEIGHT = 30

#: nextpnr-ecp5's routers, and ``auto`` (:func:`choose_router`).
ROUTERS = ("auto", "router1", "router2")

#: The largest share of the device's LUTs for which ``auto`` takes ``router1``. Measured on the
#: ULX3S-85F (docs/boards.md): the 1-PE digits engine (13% of the LUTs) routed at 112.7 MHz with
#: router1 and 93.5 MHz with router2, in the same time; on one placement of the 16-PE
#: LeNet-300-100 engine (65%) router1 gave 93.57 MHz and router2 88.07 MHz, router1 in about
#: 20 minutes (an earlier, fuller version of that engine, 67%, was not routed after an hour).
ROUTER1_MAX_LUT_SHARE = 0.70


def choose_router(luts: int, capacity_luts: int) -> str:
    """nextpnr-ecp5's router for a design estimated at ``luts`` LUTs of ``capacity_luts``."""
    if luts < 0 or capacity_luts <= 0:
        raise ValueError(f"LUT counts must be luts >= 0 and capacity_luts > 0, not {luts!r} "
                         f"and {capacity_luts!r}")
    return "router1" if luts <= ROUTER1_MAX_LUT_SHARE * capacity_luts else "router2"


class TimingError(RuntimeError):
    """Place and route did not meet the configured clock; ``result`` has the figures."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


@dataclass
class SynthesisResult:
    """What one board build achieved (the last pass of a clock search)."""

    board: str
    device: str
    pll: PLLSettings
    fmax_mhz: float
    timing_met: bool
    utilization: dict
    nextpnr_utilization: dict
    bitstream: Path
    bitstream_sha256: str
    build_dir: Path
    passes: list = field(default_factory=list)
    tool_seconds: dict = field(default_factory=dict)
    tools: dict = field(default_factory=dict)

    @property
    def clock_mhz(self) -> float:
        return self.pll.output_mhz


def utilization_summary(family: str, nextpnr_utilization: dict) -> dict:
    """``{resource: {"used", "available"}}`` under this project's names."""
    summary = {}
    for name, bel in RESOURCE_NAMES[family].items():
        if bel in nextpnr_utilization:
            summary[name] = dict(nextpnr_utilization[bel])
    return summary


def _fmax_of(report: dict, pll: PLLSettings) -> tuple[float, bool]:
    """The engine clock's fmax, and whether every other clock (the UART's, from the board's
    crystal) meets its own constraint.

    The engine's clocks are those constrained at the PLL's frequency: ``sync``, and on the
    ECP5 also the ungated PLL output that clocks the clock gate's enable
    (:class:`boards.clocks.ClockGenerator`); the lowest of their fmax is the engine's.
    """
    clocks = report["fmax"]
    if not clocks:
        raise RuntimeError("nextpnr reported no clock: the design has no constrained clock")
    nearest = min(abs(v["constraint"] - pll.output_mhz) for v in clocks.values())
    engine = [name for name, v in clocks.items()
              if abs(v["constraint"] - pll.output_mhz) <= nearest + 1e-6]
    others_met = all(v["achieved"] >= v["constraint"] for name, v in clocks.items()
                     if name not in engine)
    return min(clocks[name]["achieved"] for name in engine), others_met


def synthesize(board, make_top, build_dir, *, clock_mhz: float | None = None, seed: int = 1,
               max_passes: int = 3, retunable: bool = False, progress: bool = True,
               router: str = "router2", nextpnr_options: str = "",
               log=print) -> SynthesisResult:
    """Build ``make_top(pll)`` for ``board`` in ``build_dir`` (see module doc).

    ``retunable``: nothing in the design but the PLL depends on its frequency, so on an ECP5 the
    highest clock is found in one place and route (the PLL retuned in the routed configuration).
    ``router``: nextpnr-ecp5's router, ``router1`` or ``router2`` (callers with an estimate of
    the design pass :func:`choose_router`'s answer); ignored on an iCE40. ``nextpnr_options``:
    more options for nextpnr, after the project's own (e.g. ``--detailed-timing-report``).
    """
    if clock_mhz is not None and not clock_mhz > 0:
        raise ValueError(f"clock_mhz must be positive, not {clock_mhz!r}")
    if router not in ROUTERS[1:]:
        raise ValueError(f"router must be one of {', '.join(ROUTERS[1:])}, not {router!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, not {seed!r}")
    build_dir = Path(build_dir)
    input_mhz = _input_mhz(board)
    low, high = clock_range_mhz(board)
    target = clock_mhz if clock_mhz is not None else board.fabric_limit_mhz
    if not low <= target <= high:
        raise ValueError(f"clock must be {low:g}..{high:g} MHz on {board.name}, not {target:g}")
    retune = clock_mhz is None and retunable and board.family == "ecp5"
    passes, seconds = [], {}
    tried = set()
    while True:
        pll = pll_settings(board.family, input_mhz, target)
        if pll.output_mhz in tried:
            break
        tried.add(pll.output_mhz)
        index = len(passes) + 1
        if progress:
            log(f"place and route pass {index}: PLL {pll.output_mhz:.3f} MHz "
                f"({', '.join(f'{k}={v}' for k, v in pll.dividers.items())})"
                + (", then the PLL set to the highest clock the routed design meets"
                   if retune else ""))
        result = _build(board, make_top(pll), build_dir, pll, seed, progress, router,
                        nextpnr_options, retune=retune, input_mhz=input_mhz, low_mhz=low)
        for step, secs in result.tool_seconds.items():
            seconds[f"{step} (pass {index})"] = secs
        passes.append({"constraint_mhz": pll.output_mhz, "fmax_mhz": result.fmax_mhz,
                       "clock_mhz": result.clock_mhz, "timing_met": result.timing_met})
        if progress:
            log(f"  fmax {result.fmax_mhz:.2f} MHz, clock {result.clock_mhz:.3f} MHz: timing "
                f"{'met' if result.timing_met else 'NOT met'}")
        if clock_mhz is not None or result.timing_met or len(passes) >= max_passes:
            break
        target = max(low, result.fmax_mhz)
    result.passes, result.tool_seconds = passes, seconds
    if not result.timing_met:
        raise TimingError(
            f"timing NOT met on {board.name}: post-route fmax {result.fmax_mhz:.2f} MHz is below "
            f"the configured clock of {result.clock_mhz:.3f} MHz"
            + (f" (requested {clock_mhz:g} MHz); ask for a lower --clock-mhz or leave it out "
               "to search the highest attainable clock" if clock_mhz is not None
               else f" after {len(passes)} passes"), result)
    return result


def clock_range_mhz(board) -> tuple[float, float]:
    """The clocks (MHz) a build for ``board`` may ask for: the range its PLL makes from the
    board's clock (:func:`boards.clocks.pll_output_range`) within ``board.pll_output_mhz``, the
    range this project uses (ECP5 boards 10..400 MHz, the iCEBreaker 16..275 MHz)."""
    lowest, highest = pll_output_range(board.family, _input_mhz(board))
    low, high = board.pll_output_mhz
    return max(low, lowest), min(high, highest)


def _input_mhz(board) -> float:
    platform = board.platform()
    return platform.default_clk_frequency / 1e6


def _build(board, top, build_dir, pll, seed, progress, router, nextpnr_options, *, retune=False,
           input_mhz=None, low_mhz=None) -> SynthesisResult:
    name = "top"
    report_path = f"{name}.report.json"
    options = f"--report {report_path} --seed {seed} --timing-allow-fail"
    if board.family == "ecp5":
        # A placer timing weight of 30 (nextpnr's default is 10) gave the 2-PE digits engine
        # 97.0 MHz where the default gave 87.5 MHz, same netlist and seed.
        options += f" --router {router} --placer-heap-timingweight {PLACER_TIMING_WEIGHT}"
    if nextpnr_options:
        options += " " + nextpnr_options
    flow = Flow(board, top, build_dir, name=name, progress=progress,
                nextpnr_options=options,
                synth_options="-dsp" if board.family == "ice40" else "")
    fmax = report = None
    for step in flow.steps:
        if step.variable == "ECPPACK" and retune:
            # The routed design meets any clock up to its fmax: set the PLL to the highest
            # frequency it makes at or below it, in the configuration only.
            if fmax < low_mhz:
                raise RuntimeError(f"post-route fmax {fmax:.2f} MHz is below the lowest clock "
                                   f"this project's PLL range allows ({low_mhz:g} MHz)")
            pll = pll_settings(board.family, input_mhz, fmax)
            config = flow.path(".config")
            config.write_text(retune_ecp5_config(config.read_text(), pll))
        if progress:
            print(f"  {step.label} ...", flush=True)
        flow.run(step.variable)
        if step.variable.startswith("NEXTPNR"):
            report = read_nextpnr_report(flow.path(".report.json"))
            fmax, others_met = _fmax_of(report, pll)
    bitstream = flow.path(_BITSTREAM_SUFFIX[board.family])
    return SynthesisResult(
        board=board.name, device=board.device, pll=pll, fmax_mhz=round(fmax, 2),
        timing_met=fmax >= pll.output_mhz and others_met,
        utilization=utilization_summary(board.family,
                                                                           report["utilization"]),
        nextpnr_utilization={k: v for k, v in report["utilization"].items() if v["used"]},
        bitstream=bitstream, bitstream_sha256=sha256_file(bitstream), build_dir=build_dir,
        tool_seconds=dict(flow.seconds), tools=dict(flow.tools))
