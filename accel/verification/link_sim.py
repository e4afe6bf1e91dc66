"""A board in Amaranth's simulator, as a :class:`accel.host.HostLink` transport.

:class:`SimulatedBoard` runs :class:`accel.gateware.link.LinkedEngine` cycle by cycle: one async
testbench shifts the queued host bytes into ``rx`` bit by bit (8N1, ``divisor`` clocks per bit),
another samples ``tx`` in the middle of each bit and collects the board's bytes. With
``uart_clock_hz`` the board has two clocks (``sync`` and ``uart``, two-domain mode of
:class:`accel.gateware.link.HostBridge`) and the bit timing is in ``uart`` clocks. ``read``
advances simulated time only as far as needed, so the host library runs unchanged against it.
Faults can be injected on both directions for the tests.
"""

from __future__ import annotations

import random
from collections import deque

from amaranth.sim import Simulator

from accel.gateware.link import LinkedEngine
from accel.gateware.uart import baud_divisor
from accel.planning.plan import EnginePlan
from accel.verification import budget

__all__ = ["SimulatedBoard"]


def _apply(filter_, index, byte):
    if filter_ is None:
        return bytes([byte])
    result = filter_(index, byte)
    if result is None:
        return b""
    if isinstance(result, int):
        return bytes([result & 0xFF])
    return bytes(result)


class SimulatedBoard:
    """``LinkedEngine(plan)`` in simulation, with ``write``/``read``/``close`` like a serial port.

    Parameters
    ----------
    plan : EnginePlan
    clock_hz, baud : int
        The simulated ``sync`` clock and UART rate; keep ``clock_hz / baud`` (or
        ``uart_clock_hz / baud``) small (8 .. 16) for speed.
    seed : int
        Seeds :attr:`rng` (for tests that corrupt at random).
    max_write_words : int
        As for :class:`accel.gateware.link.HostBridge`.
    timeout_cycles : int, optional
        ``read`` gives up after this many ``sync`` clocks without a byte on either line;
        default: room for a few images' work plus a few bytes.
    uart_clock_hz : int, optional
        Simulate two clocks: ``sync`` at ``clock_hz`` and ``uart`` at ``uart_clock_hz``, the
        UART (and the divisor) in ``uart`` (``LinkedEngine(..., uart_clock_hz=...)``, which is
        not told ``clock_hz``; INFO reports the measured ``sync`` frequency).
    meter_window_cycles : int, optional
        Passed to the bridge (two-domain mode): a short clock meter window for simulation.

    Attributes
    ----------
    rx_filter, tx_filter : callable or None
        ``f(index, byte)`` applied to every host-to-board byte as it is written (``index`` counts
        the bytes written) / every board-to-host byte as it arrives (``index`` counts them):
        return the byte (possibly changed), several bytes, or None to drop it.
    cycles_simulated : int
        ``sync`` clocks simulated so far.
    framing_errors_seen : int
        Board-to-host bytes whose stop bit was low.
    """

    def __init__(self, plan: EnginePlan, *, clock_hz: int = 8_000_000, baud: int = 1_000_000,
                 seed: int = 0, max_write_words: int = 64, timeout_cycles: int | None = None,
                 uart_clock_hz: int | None = None, meter_window_cycles: int | None = None):
        if not isinstance(plan, EnginePlan):
            raise TypeError(f"plan must be an EnginePlan, not {plan!r}")
        if not isinstance(clock_hz, int) or isinstance(clock_hz, bool) or clock_hz <= 0:
            raise ValueError(f"clock_hz must be a positive int, not {clock_hz!r}")
        self.plan = plan
        self.clock_hz = clock_hz
        self.uart_clock_hz = uart_clock_hz
        if uart_clock_hz is None:
            self.divisor = baud_divisor(clock_hz, baud)
            self.dut = LinkedEngine(plan, clock_hz=clock_hz, baud=baud,
                                    max_write_words=max_write_words,
                                    meter_window_cycles=meter_window_cycles)
            uart_period = 1 / clock_hz
        else:
            self.divisor = baud_divisor(uart_clock_hz, baud)
            self.dut = LinkedEngine(plan, baud=baud, max_write_words=max_write_words,
                                    uart_clock_hz=uart_clock_hz,
                                    meter_window_cycles=meter_window_cycles)
            uart_period = 1 / uart_clock_hz
        self._period = 1 / clock_hz
        self._uart_period = uart_period
        self._bit_time = self.divisor * uart_period
        # ``sync`` clocks per bit (rounded up), for the read loop and the default timeout.
        bit_cycles = -(-self.divisor * clock_hz // (uart_clock_hz or clock_hz))
        self._bit_cycles = bit_cycles
        if timeout_cycles is None:
            per_image = sum(budget.layer_clocks(layer) for layer in plan.layers) \
                + plan.beats_per_image + 200
            timeout_cycles = 6 * per_image + 40 * bit_cycles
            if uart_clock_hz is not None:           # room for the FIFOs' latency
                timeout_cycles += 20 + 20 * -(-clock_hz // uart_clock_hz)
        if not isinstance(timeout_cycles, int) or timeout_cycles <= 0:
            raise ValueError(f"timeout_cycles must be a positive int, not {timeout_cycles!r}")
        self.timeout_cycles = timeout_cycles
        self.rng = random.Random(seed)
        self.rx_filter = None
        self.tx_filter = None
        self.framing_errors_seen = 0
        self._to_board: deque = deque()             # (byte, stop bit)
        self._from_board: deque = deque()
        self._written = 0
        self._received = 0
        self._now = 0                               # clocks simulated (the run_until deadline)
        self._activity = 0                          # clock of the last byte on either line
        self._sending = False
        self._sim = Simulator(self.dut)
        self._sim.add_clock(self._period)
        if uart_clock_hz is not None:
            self._sim.add_clock(uart_period, domain="uart")
        self._sim.add_testbench(self._drive_rx, background=True)
        self._sim.add_testbench(self._sample_tx, background=True)

    @property
    def cycles_simulated(self) -> int:
        return self._now

    # -- transport ------------------------------------------------------------------------------

    def write(self, data) -> int:
        """Queue host-to-board bytes (through :attr:`rx_filter`)."""
        for byte in bytes(data):
            for out in _apply(self.rx_filter, self._written, byte):
                self._to_board.append((out, 1))
            self._written += 1
        return len(data)

    def read(self, n: int = 1) -> bytes:
        """Simulate until ``n`` board-to-host bytes arrived or the line stayed quiet too long."""
        out = bytearray()
        while len(out) < n:
            if self._from_board:
                out.append(self._from_board.popleft())
                continue
            quiet = not self._to_board and not self._sending
            if quiet and self._now - self._activity > self.timeout_cycles:
                break
            self.advance(10 * self._bit_cycles)
        return bytes(out)

    def close(self):
        pass

    # -- fault injection ------------------------------------------------------------------------

    def inject(self, data):
        """Queue raw bytes for the board, bypassing :attr:`rx_filter`."""
        for byte in bytes(data):
            self._to_board.append((byte, 1))

    def inject_framing_error(self, byte: int = 0x55):
        """Queue a byte whose stop bit is low (then the line returns high for one bit)."""
        self._to_board.append((byte & 0xFF, 0))

    def advance(self, cycles: int):
        """Simulate ``cycles`` more clocks."""
        self._now += int(cycles)
        self._sim.run_until(self._now * self._period)

    # -- testbenches ----------------------------------------------------------------------------

    # Both testbenches wait with ``ctx.delay`` a quarter clock off the clock edges (no races),
    # not ``tick().repeat`` (its generator cannot be closed while the simulation is suspended).

    async def _drive_rx(self, ctx):
        rx, bit_time = self.dut.rx, self._bit_time
        ctx.set(rx, 1)
        await ctx.delay(self._uart_period / 4)
        while True:
            if not self._to_board:
                await ctx.delay(bit_time)
                continue
            byte, stop = self._to_board.popleft()
            self._sending = True
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [stop]:
                ctx.set(rx, bit)
                await ctx.delay(bit_time)
            if not stop:
                ctx.set(rx, 1)
                await ctx.delay(bit_time)
            self._sending = False
            self._activity = self._now

    async def _sample_tx(self, ctx):
        tx, bit_time = self.dut.tx, self._bit_time
        while True:
            await ctx.negedge(tx)
            await ctx.delay((self.divisor // 2 + 0.25) * self._uart_period)
            if ctx.get(tx):
                continue                            # a glitch
            byte = 0
            for i in range(8):
                await ctx.delay(bit_time)
                byte |= ctx.get(tx) << i
            await ctx.delay(bit_time)
            self._activity = self._now
            if not ctx.get(tx):
                self.framing_errors_seen += 1
                continue
            for out in _apply(self.tx_filter, self._received, byte):
                self._from_board.append(out)
            self._received += 1
