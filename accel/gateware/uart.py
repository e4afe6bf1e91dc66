"""8N1 UART byte streams for the host link (``docs/host-link.md``), and the baud divisor
the bridge accepts."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAX_BAUD_ERROR", "MIN_BRIDGE_DIVISOR", "UARTReceiver", "UARTTransmitter", "baud_divisor"]


#: The smallest clocks-per-bit the bridge accepts, and the largest baud rate error.
MIN_BRIDGE_DIVISOR = 8


MAX_BAUD_ERROR = 0.02


def _reject(component, error):
    component._MustUse__used = True             # never built: no "created but never used"
    raise error


def _check_divisor(component, divisor, minimum):
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        _reject(component, TypeError(f"divisor must be an int, not {divisor!r}"))
    if divisor < minimum:
        _reject(component, ValueError(f"divisor must be at least {minimum}, not {divisor!r}"))


def baud_divisor(clock_hz: int, baud: int) -> int:
    """Clocks per bit for ``baud`` at ``clock_hz``; ValueError if unusable for the bridge."""
    for name, value in [("clock_hz", clock_hz), ("baud", baud)]:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, not {value!r}")
    divisor = round(clock_hz / baud)
    if divisor < MIN_BRIDGE_DIVISOR:
        raise ValueError(f"baud {baud} is too fast for a {clock_hz} Hz clock: clock_hz / baud "
                         f"must round to at least {MIN_BRIDGE_DIVISOR}, not {divisor}")
    achieved = clock_hz / divisor
    error = abs(achieved - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud {baud} at {clock_hz} Hz: divisor {divisor} gives {achieved:.0f} "
                         f"baud, {error:.1%} off (at most {MAX_BAUD_ERROR:.0%})")
    return divisor


class UARTReceiver(wiring.Component):
    """8N1 receiver: LSB first, idle high, every bit sampled in its middle.

    Parameters
    ----------
    divisor : int
        Clocks per bit, at least 4.

    Attributes
    ----------
    rx : In(1)
        The line (synchronized here by two flip-flops).
    o : Out(stream.Signature(8))
        Received bytes. ``valid`` is held until ``ready``; a byte not taken before the next one
        is complete is overwritten (the line cannot be stalled).
    framing_error : Out(1)
        Strobe: a stop bit was low. The byte is dropped and the receiver waits for the line to
        be high before looking for a start bit.

    Latency: a byte is on ``o`` about 9.5 bit times plus 3 clocks after its start bit's falling
    edge. Throughput: one byte per 10 bit times (the stop bit is sampled in its middle, so a
    transmitter up to ~4 % fast is followed).
    """

    def __init__(self, divisor: int):
        _check_divisor(self, divisor, 4)
        self._divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "framing_error": Out(1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        meta = Signal(init=1)
        line = Signal(init=1)
        timer = Signal(range(divisor))
        bit_index = Signal(range(8))
        shift = Signal(8)

        m.d.sync += [meta.eq(self.rx), line.eq(meta), self.framing_error.eq(0)]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "IDLE"                     # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(divisor - 1), bit_index.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), timer.eq(divisor - 1),
                                 bit_index.eq(bit_index + 1)]
                    with m.If(bit_index == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.framing_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """8N1 transmitter: start bit, 8 data bits LSB first, stop bit; the line idles high.

    Parameters
    ----------
    divisor : int
        Clocks per bit, at least 4.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes to send; ``ready`` while idle.
    tx : Out(1)
        The line, from a flip-flop.

    Latency: the start bit begins one clock after a byte is accepted. Throughput: one byte per
    ``10 * divisor + 1`` clocks.
    """

    def __init__(self, divisor: int):
        _check_divisor(self, divisor, 4)
        self._divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        timer = Signal(range(divisor))
        remaining = Signal(range(10))
        shift = Signal(9)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [self.tx.eq(0), shift.eq(Cat(self.i.payload, Const(1, 1))),
                                 remaining.eq(9), timer.eq(divisor - 1)]
                    m.next = "SEND"
            with m.State("SEND"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(remaining == 0):
                    m.next = "IDLE"                     # the stop bit has lasted a bit time
                with m.Else():
                    m.d.sync += [self.tx.eq(shift[0]), shift.eq(shift[1:]),
                                 remaining.eq(remaining - 1), timer.eq(divisor - 1)]
        return m
