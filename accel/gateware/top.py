"""The design that goes on a board: clock generator, host link and engine.

:class:`BoardTop` asks the platform for the board's default clock (through
:class:`boards.clocks.ClockGenerator`, which makes the ``sync`` domain with a PLL) and for the
board's serial port, and puts :class:`accel.gateware.link.LinkedEngine` (UART bridge plus engine,
``docs/host-link.md``) between them. The receive line is synchronized by the link's
UART receiver (two flip-flops). LED 0, where the board has one, blinks at 1 Hz.
"""

from __future__ import annotations

from amaranth.build import ResourceError
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import io

from accel.planning.plan import EnginePlan
from boards.clocks import PLLSettings

__all__ = ["BoardTop"]


class BoardTop(Elaboratable):
    """Clock generator, UART host link and engine for one board.

    The engine and the link's framing run in ``sync`` (the PLL's output); the UART's bit timing
    runs in ``uart``, clocked by the board's own clock (``reference_mhz``), so nothing in the
    design but the PLL depends on the engine clock: the build may set the PLL after place and
    route (``boards.synthesis``), and the link reports the engine clock it measures.

    Parameters
    ----------
    plan : EnginePlan
    board : boards.Board
    pll : PLLSettings
        The ``sync`` clock.
    baud : int
        The host link's bit rate.
    """

    def __init__(self, plan: EnginePlan, board, pll: PLLSettings, *, baud: int):
        if not isinstance(plan, EnginePlan):
            self._MustUse__used = True
            raise TypeError(f"plan must be an EnginePlan, not {plan!r}")
        if not isinstance(pll, PLLSettings):
            self._MustUse__used = True
            raise TypeError(f"pll must be a PLLSettings, not {pll!r}")
        self.plan, self.board, self.pll, self.baud = plan, board, pll, baud
        self.reference_hz = round(pll.input_mhz * 1e6)
        # Build the link now, so that a bad baud rate fails before any tool runs.
        from accel.gateware.link import LinkedEngine
        self.link = LinkedEngine(plan, baud=baud, uart_clock_hz=self.reference_hz)

    def elaborate(self, platform):
        from boards.clocks import ClockGenerator

        m = Module()
        clocks = ClockGenerator(self.pll, reference_domain="uart")
        m.domains += clocks.domains()       # defined here, above every user (Amaranth 0.6)
        m.submodules.clocks = clocks
        m.submodules.link = link = self.link
        uart = platform.request(*self.board.uart, dir="-")
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx_buffer.i), tx_buffer.o.eq(link.tx)]

        leds = []
        for index in range(2):
            try:
                port = platform.request("led", index, dir="-")
            except ResourceError:   # the board has fewer LEDs: nothing to show there
                break
            m.submodules[f"led{index}"] = buffer = io.Buffer("o", port)
            leds.append(buffer.o)
        if leds:                    # blinks at 1 Hz from the board's clock: the design runs
            half = self.reference_hz // 2
            blink = Signal(range(half + 1))
            shown = Signal()
            with m.If(blink == half):
                m.d.uart += [blink.eq(0), shown.eq(~shown)]
            with m.Else():
                m.d.uart += blink.eq(blink + 1)
            m.d.comb += leds[0].eq(shown)
        return m
