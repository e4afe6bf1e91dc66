"""Registry of the supported open FPGA boards, declared on top of ``amaranth-boards`` platforms.

A :class:`Board` is pure declaration: which ``amaranth-boards`` platform it is, the device's
capacity (LUTs, block RAMs, multipliers, from the vendor's data sheet), which open flow builds
it, which resources carry the clock and the host link, and the PLL's limits. Pins and clocks are
always asked of the platform, never written here.

>>> from boards import get_board
>>> get_board("ulx3s").device
'LFE5U-85F'

``python -m boards`` prints the list (the same table as ``python -m accel.build --board list``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.build import Attrs, Pins, Resource
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform, OrangeCrabR0_2_85FPlatform
from amaranth_boards.resources import UARTResource
from amaranth_boards.ulx3s import (ULX3S_12F_Platform, ULX3S_25F_Platform, ULX3S_45F_Platform,
                                   ULX3S_85F_Platform)

__all__ = [
    "BOARDS",
    "Board",
    "Capacity",
    "board_names",
    "board_table",
    "get_board",
]


@dataclass(frozen=True)
class Capacity:
    """What a device offers, per resource, as its data sheet gives it.

    Attributes
    ----------
    luts : int
        4-input LUTs.
    brams : int
        Block RAMs (ECP5 ``DP16KD``, 18 Kbit; iCE40 ``SB_RAM40_4K``, 4 Kbit).
    bram_bits : int
        Bits per block RAM.
    multipliers : int
        Hard multipliers (ECP5 ``MULT18X18D``, 18x18; iCE40 ``SB_MAC16``, 16x16).
    multiplier_width : int
        Widest signed operand one multiplier takes.
    """

    luts: int
    brams: int
    bram_bits: int
    multipliers: int
    multiplier_width: int


@dataclass(frozen=True)
class Board:
    """One supported board.

    Attributes
    ----------
    name : str
        Registry name (``ulx3s-85f``).
    description : str
    platform_class : type
        The ``amaranth-boards`` platform.
    family : str
        ``"ecp5"`` or ``"ice40"``: selects the open flow (nextpnr-ecp5 + ecppack, or
        nextpnr-ice40 + icepack) and the PLL primitive.
    capacity : Capacity
    uart : (str, int)
        Resource name and number of the host link's serial port.
    extra_resources : tuple
        Resources the board lacks in ``amaranth-boards`` but this project uses (the OrangeCrab
        has no USB serial chip: its UART is declared on the Feather header).
    pll_output_mhz : (float, float)
        The range of the PLL's output this project uses.
    fabric_limit_mhz : float
        The ceiling of a first place and route when searching for the highest clock.
    """

    name: str
    description: str
    platform_class: type
    family: str
    capacity: Capacity
    uart: tuple = ("uart", 0)
    extra_resources: tuple = field(default=())
    pll_output_mhz: tuple = (10.0, 400.0)
    fabric_limit_mhz: float = 200.0

    @property
    def device(self) -> str:
        return self.platform_class.device

    @property
    def package(self) -> str:
        return self.platform_class.package

    def platform(self):
        """A fresh platform instance with this project's extra resources added."""
        platform = self.platform_class()
        if self.extra_resources:
            platform.add_resources(list(self.extra_resources))
        return platform


def _ecp5(luts, brams, multipliers):
    return Capacity(luts=luts, brams=brams, bram_bits=18 * 1024, multipliers=multipliers,
                    multiplier_width=18)


# ECP5 family data sheet (FPGA-DS-02012), table 1.1: LUTs, EBR blocks (18 Kbit), 18x18 multipliers.
_LFE5U_12F = _ecp5(12_288, 32, 28)
_LFE5U_25F = _ecp5(24_288, 56, 28)
_LFE5U_45F = _ecp5(43_848, 108, 72)
_LFE5U_85F = _ecp5(83_640, 208, 156)
# iCE40 UltraPlus data sheet (FPGA-DS-02008): 5,280 LUTs, 30 EBR (4 Kbit), 8 DSP (16x16).
_ICE40UP5K = Capacity(luts=5_280, brams=30, bram_bits=4 * 1024, multipliers=8,
                      multiplier_width=16)

# The OrangeCrab's USB goes straight to the FPGA; the host link is a 3.3 V UART on the Feather
# header's TX/RX pins (io "1" = TX, io "0" = RX), for a USB serial adapter.
_ORANGECRAB_UART = UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))

_ULX3S = "Radiona ULX3S, FTDI USB serial"

#: Every supported board by name.
BOARDS: dict[str, Board] = {}
for _board in (
    Board("ulx3s-12f", f"{_ULX3S}", ULX3S_12F_Platform, "ecp5", _LFE5U_12F),
    Board("ulx3s-25f", f"{_ULX3S}", ULX3S_25F_Platform, "ecp5", _LFE5U_25F),
    Board("ulx3s-45f", f"{_ULX3S}", ULX3S_45F_Platform, "ecp5", _LFE5U_45F),
    Board("ulx3s-85f", f"{_ULX3S}", ULX3S_85F_Platform, "ecp5", _LFE5U_85F),
    Board("orangecrab-25f", "OrangeCrab r0.2, UART on the Feather header",
          OrangeCrabR0_2_25FPlatform, "ecp5", _LFE5U_25F, extra_resources=(_ORANGECRAB_UART,)),
    Board("orangecrab-85f", "OrangeCrab r0.2, UART on the Feather header",
          OrangeCrabR0_2_85FPlatform, "ecp5", _LFE5U_85F, extra_resources=(_ORANGECRAB_UART,)),
    Board("icebreaker", "1BitSquared iCEBreaker, FTDI USB serial", ICEBreakerPlatform, "ice40",
          _ICE40UP5K, pll_output_mhz=(16.0, 275.0), fabric_limit_mhz=60.0),
):
    BOARDS[_board.name] = _board

#: Short names: the board's most common variant.
ALIASES = {"ulx3s": "ulx3s-85f", "orangecrab": "orangecrab-25f"}


def board_names() -> list[str]:
    """Every accepted ``--board`` value, aliases included."""
    return sorted(BOARDS) + sorted(ALIASES)


def get_board(name: str) -> Board:
    """The board called ``name`` (case-insensitive; aliases allowed)."""
    if not isinstance(name, str):
        raise TypeError(f"board must be a string, not {name!r}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(board_names())}, not {name!r} "
                         f"(see --board list)")
    return BOARDS[key]


def board_table() -> str:
    """The registry as a readable table (``--board list``)."""
    aliases = {}
    for alias, target in ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    rows = [("board", "device", "flow", "LUT4", "block RAMs", "multipliers", "description")]
    for board in BOARDS.values():
        cap = board.capacity
        name = board.name + "".join(f" (= {a})" for a in aliases.get(board.name, ()))
        flow = "nextpnr-ecp5" if board.family == "ecp5" else "nextpnr-ice40"
        rows.append((name, board.device, flow, f"{cap.luts:,}",
                     f"{cap.brams} x {cap.bram_bits // 1024} Kbit",
                     f"{cap.multipliers} x {cap.multiplier_width}x{cap.multiplier_width}",
                     board.description))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
