"""PLL settings and the clock generator of a board's ``sync`` domain.

:func:`pll_settings` searches the PLL's dividers for the output nearest to (never above) a
requested frequency, within the primitive's documented ranges; :class:`ClockGenerator` builds
the PLL from the board's default clock and holds ``sync`` in reset until the PLL has locked.

ECP5 ``EHXPLLL`` (Lattice TN1263, and Project Trellis's ``ecppll``): ``f_out = f_in * CLKFB_DIV /
CLKI_DIV`` with the feedback from ``CLKOP``; PFD ``f_in / CLKI_DIV`` 3.125-400 MHz, VCO
``f_out * CLKOP_DIV`` 400-800 MHz. iCE40 ``SB_PLL40_CORE`` (Lattice iCE40 sysCLOCK PLL guide, and
``icepll``): simple feedback, ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2 ** DIVQ)``; PFD 10-133
MHz, VCO 533-1066 MHz, output 16-275 MHz.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer

__all__ = ["ClockGenerator", "PLLSettings", "pll_output_range", "pll_settings",
           "retune_ecp5_config"]


@dataclass(frozen=True)
class PLLSettings:
    """Divider settings of one PLL and the frequency they give.

    ``dividers`` holds the primitive's parameters by name (``CLKI_DIV`` ... or ``DIVR`` ...).
    """

    family: str
    input_mhz: float
    output_mhz: float
    vco_mhz: float
    dividers: dict


def _ecp5_candidates(f_in):
    for clki_div in range(1, 129):
        pfd = f_in / clki_div
        if not 3.125 <= pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            f_out = pfd * clkfb_div
            if not 3.125 <= f_out <= 400:
                continue
            for clkop_div in range(1, 129):
                vco = f_out * clkop_div
                if 400 <= vco <= 800:
                    yield f_out, vco, dict(CLKI_DIV=clki_div, CLKFB_DIV=clkfb_div,
                                           CLKOP_DIV=clkop_div)
                    break


def _ice40_candidates(f_in):
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                f_out = vco / 2 ** divq
                if 16 <= f_out <= 275:
                    yield f_out, vco, dict(DIVR=divr, DIVF=divf, DIVQ=divq,
                                           FILTER_RANGE=_ice40_filter_range(pfd))


def _ice40_filter_range(pfd):
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if pfd < limit:
            return value
    return 6


_CANDIDATES = {"ecp5": _ecp5_candidates, "ice40": _ice40_candidates}


def pll_output_range(family: str, input_mhz: float) -> tuple[float, float]:
    """The lowest and highest output frequencies (MHz) the PLL makes from ``input_mhz``."""
    if family not in _CANDIDATES:
        raise ValueError(f"family must be one of {', '.join(_CANDIDATES)}, not {family!r}")
    outputs = [f for f, _, _ in _CANDIDATES[family](input_mhz)]
    if not outputs:
        raise ValueError(f"the {family} PLL makes no output from {input_mhz:g} MHz")
    return min(outputs), max(outputs)


def pll_settings(family: str, input_mhz: float, target_mhz: float) -> PLLSettings:
    """The settings whose output is the highest frequency not above ``target_mhz``.

    Ties go to the smallest input divider (the least jitter). Raises ``ValueError`` when no
    setting reaches at or below the target.
    """
    if family not in _CANDIDATES:
        raise ValueError(f"family must be one of {', '.join(_CANDIDATES)}, not {family!r}")
    if not target_mhz > 0:
        raise ValueError(f"target_mhz must be positive, not {target_mhz!r}")
    best = None
    for f_out, vco, dividers in _CANDIDATES[family](input_mhz):
        if f_out > target_mhz * (1 + 1e-9):
            continue
        if best is None or f_out > best[0] + 1e-9:
            best = (f_out, vco, dividers)
    if best is None:
        lowest = min(f for f, _, _ in _CANDIDATES[family](input_mhz))
        raise ValueError(f"the {family} PLL cannot make {target_mhz:g} MHz or less from "
                         f"{input_mhz:g} MHz; its lowest output is {lowest:.3f} MHz")
    f_out, vco, dividers = best
    return PLLSettings(family, float(input_mhz), float(f_out), float(vco), dividers)


class ClockGenerator(Elaboratable):
    """The ``sync`` domain at ``settings.output_mhz``, from the board's default clock via a PLL.

    Until the PLL reports lock, ``sync`` is held still:

    - ECP5: ``sync`` has no reset. Its clock is the PLL's output through a ``DCCA`` clock
      buffer, enabled by the lock flag after two flip-flops clocked on the falling edge of the
      PLL's output (so the enable changes only while the clock is low and no short pulse
      reaches the fabric). Every flip-flop starts from the value configuration gives it and
      sees its first edge only once the clock is stable. No reset net has to reach every
      flip-flop of the chip within a clock: on a 16-PE engine that net was the critical path.
      Should lock be lost, the clock stops and resumes where it stopped.
    - iCE40: ``sync`` is held in reset, released synchronously
      (:class:`amaranth.lib.cdc.ResetSynchronizer`).

    nextpnr derives the PLL output's timing constraint from the input clock's, so place and
    route checks timing at the frequency actually configured.

    With ``reference_domain``, that domain (reset-less) is clocked by the board's clock itself:
    logic whose constants depend on a frequency (a UART's bit time) lives there, so that the
    PLL's frequency can change without changing the design.

    The generator drives ``sync`` (and ``reference_domain``) but does not define them: the
    design's top defines :meth:`domains` beside it (``m.domains += clocks.domains()``), as
    Amaranth 0.6 requires a domain to be defined where it is used or above.
    """

    def __init__(self, settings: PLLSettings, *, reference_domain: str | None = None):
        if not isinstance(settings, PLLSettings):
            raise TypeError(f"settings must be a PLLSettings, not {settings!r}")
        if reference_domain is not None and (not isinstance(reference_domain, str)
                                             or reference_domain == "sync"):
            raise ValueError(f"reference_domain must be a domain name other than 'sync', not "
                             f"{reference_domain!r}")
        self.settings = settings
        self.reference_domain = reference_domain

    def domains(self) -> list[ClockDomain]:
        """The domains this generator drives, for the design's top to define: ``sync``
        (reset-less on the ECP5, whose clock is gated until lock instead) and the
        ``reference_domain`` if any."""
        domains = [ClockDomain("sync", reset_less=self.settings.family == "ecp5")]
        if self.reference_domain is not None:
            domains.append(ClockDomain(self.reference_domain, reset_less=True))
        return domains

    def elaborate(self, platform):
        s = self.settings
        m = Module()
        locked = Signal()
        if s.family == "ecp5":
            # The enable's flip-flops run on the ungated clock's falling edge.
            m.domains.pll_gate = ClockDomain("pll_gate", clk_edge="neg", reset_less=True)
            pll_clk = Signal()
            enable = Signal()
            m.d.comb += ClockSignal("pll_gate").eq(pll_clk)
            m.submodules.lock_sync = FFSynchronizer(locked, enable, o_domain="pll_gate")
            m.submodules.clk_gate = Instance(
                "DCCA", i_CLKI=pll_clk, i_CE=enable, o_CLKO=ClockSignal("sync"))
            m.submodules.clk_buffer = clk_buffer = io.Buffer(
                "i", platform.request(platform.default_clk, dir="-"))
            clk_in = clk_buffer.i
            d = s.dividers
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{s.input_mhz:g}",
                a_FREQUENCY_PIN_CLKOP=f"{s.output_mhz:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=d["CLKI_DIV"], p_CLKFB_DIV=d["CLKFB_DIV"], p_CLKOP_DIV=d["CLKOP_DIV"],
                p_CLKOP_CPHASE=d["CLKOP_DIV"] - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk_in, i_CLKFB=pll_clk, i_RST=0, i_STDBY=0,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=pll_clk, o_LOCK=locked,
            )
        else:
            # On the iCE40 the PLL sits on the clock pin's own pad (the pin cannot also be an
            # input buffer): SB_PLL40_2_PAD, whose port A passes the board's clock through.
            d = s.dividers
            clk_in = Signal()
            m.submodules.pll = Instance(
                "SB_PLL40_2_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT_PORTB="GENCLK",
                p_DIVR=d["DIVR"], p_DIVF=d["DIVF"], p_DIVQ=d["DIVQ"],
                p_FILTER_RANGE=d["FILTER_RANGE"],
                i_PACKAGEPIN=platform.request(platform.default_clk, dir="-").io,
                i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBALA=clk_in, o_PLLOUTGLOBALB=ClockSignal("sync"), o_LOCK=locked,
            )
            m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        if self.reference_domain is not None:
            m.d.comb += ClockSignal(self.reference_domain).eq(clk_in)

        return m


#: The EHXPLLL words of nextpnr's ECP5 text configuration (Project Trellis ``textcfg``) that
#: hold the dividers: the dividers minus one, and the output's coarse phase as set.
_ECP5_CONFIG_WORDS = {"CLKI_DIV": lambda d: d["CLKI_DIV"] - 1,
                      "CLKFB_DIV": lambda d: d["CLKFB_DIV"] - 1,
                      "CLKOP_DIV": lambda d: d["CLKOP_DIV"] - 1,
                      "CLKOP_CPHASE": lambda d: d["CLKOP_DIV"] - 1}


def retune_ecp5_config(text: str, settings: PLLSettings) -> str:
    """``text`` (an ECP5 ``textcfg``) with its one PLL set to ``settings``' dividers.

    Only the divider words change: the placed and routed design, hence its timing, stays as
    nextpnr analysed it. Raises ``ValueError`` unless the configuration has exactly one PLL.
    """
    if settings.family != "ecp5":
        raise ValueError(f"settings must be for an ecp5 PLL, not {settings.family!r}")
    lines = text.split("\n")
    groups = [i for i, line in enumerate(lines)
              if line.startswith(".tile_group") and "PLL0" in line]
    if len(groups) != 1:
        raise ValueError(f"the configuration must have exactly one PLL, not {len(groups)}")
    found = set()
    i = groups[0] + 1
    while i < len(lines) and lines[i].strip():
        parts = lines[i].split()
        if len(parts) == 3 and parts[0] == "word:" and parts[1] in _ECP5_CONFIG_WORDS:
            width = len(parts[2])
            value = _ECP5_CONFIG_WORDS[parts[1]](settings.dividers)
            if not 0 <= value < (1 << width):
                raise ValueError(f"{parts[1]} {value} does not fit {width} bits")
            lines[i] = f"word: {parts[1]} {value:0{width}b}"
            found.add(parts[1])
        i += 1
    missing = set(_ECP5_CONFIG_WORDS) - found
    if missing:
        raise ValueError(f"the PLL's configuration lacks {', '.join(sorted(missing))}")
    return "\n".join(lines)
