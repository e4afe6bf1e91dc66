"""The board side of the UART host link (``docs/host-link.md``), in Amaranth 0.5.

- :class:`~accel.gateware.uart.UARTReceiver`, :class:`~accel.gateware.uart.UARTTransmitter`
  (:mod:`accel.gateware.uart`): 8N1 byte streams.
- :class:`~accel.gateware.framing.FrameTransmitter` (:mod:`accel.gateware.framing`): SLIP
  framing with the CRC-16 appended, for responses.
- :class:`HostBridge`: decodes request frames, checks them, buffers the payload, executes INFO,
  INFER and WRITE on an engine's ports and answers; its engine-facing ports mirror
  :class:`accel.gateware.engine.Engine`'s, flipped.
- :class:`LinkedEngine`: a ``HostBridge`` wired to an ``Engine``; the board top's core.

Two modes: single-domain (``clock_hz`` given, everything in ``sync``, the UART's bit time
derived from ``clock_hz``) and two-domain (``uart_clock_hz`` given: the UART in a ``"uart"``
domain on the board's crystal, FIFOs across to ``sync``, and INFO's clock field measured), so
that the netlist does not depend on the ``sync`` frequency, which may then be set after place
and route by changing only the PLL's dividers.

The wire format, field widths and fingerprint are shared with the host
(:mod:`accel.host`).
"""

from __future__ import annotations

from amaranth.hdl import Const, DomainRenamer, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from accel.gateware.engine import Engine
from accel.gateware.framing import FrameTransmitter
from accel.gateware.link.execute import RequestExecutor
from accel.gateware.link.request import RequestDecoder
from accel.gateware.link.response import ResponseSequencer
from accel.gateware.uart import UARTReceiver, UARTTransmitter, _reject, baud_divisor
from accel.planning.plan import EnginePlan
from accel.protocol import (BAD_CRC, BAD_ESCAPE, BAD_KIND, BAD_LENGTH, BAD_REPEAT, CYCLES_BYTES,
                            DEFAULT_MAX_WRITE_WORDS, END, ESC, ESC_END, ESC_ESC, FRAMING, INFER,
                            INFO, INFO_BYTES, NAK, PROTOCOL_VERSION, RESPONSE, WRITE, LinkFormat,
                            plan_fingerprint)

__all__ = ["HostBridge", "LinkedEngine", "buffer_shapes", "meter_window"]


def buffer_shapes(plan: EnginePlan, max_write_words: int = DEFAULT_MAX_WRITE_WORDS) -> dict:
    """``{name: (depth, shape)}`` of the bridge's buffers: one image's input beats, one write
    request's words and one image's logits (the fit check counts them with the engine's)."""
    word = data.StructLayout({"addr": unsigned(plan.address_bits),
                              "data": unsigned(plan.data_bits)})
    return {
        "beat_buffer": (plan.beats_per_image, unsigned(plan.input_lanes * plan.input_bits)),
        "word_buffer": (max_write_words, word),
        "logit_buffer": (plan.out_features, signed(plan.logit_bits)),
    }


#: Two-domain mode: the clock meter's window is ``uart_clock_hz // METER_WINDOWS_PER_SECOND``
#: uart clocks (10 ms), and the depth of each clock-domain-crossing FIFO.
METER_WINDOWS_PER_SECOND = 100


CDC_FIFO_DEPTH = 8


#: The shortest meter window accepted (``meter_window_cycles``, in uart clocks).
MIN_METER_WINDOW = 16


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def meter_window(uart_clock_hz: int, meter_window_cycles: int | None = None) -> tuple[int, int]:
    """``(window, scale)`` of the clock meter: ``window`` uart clocks, reading = count * scale.

    By default the window is 10 ms: ``uart_clock_hz // 100`` uart clocks when ``uart_clock_hz``
    is a multiple of 100 (scale exactly 100), else ``round(uart_clock_hz / 100)``. The scale is
    ``round(uart_clock_hz / window)``, exact when ``window`` divides ``uart_clock_hz``; otherwise
    the reading is off by the factor ``scale * window / uart_clock_hz`` (at most ``0.5 / window``
    relative, 5 ppm for a 10 ms window of a 1 MHz or faster crystal).
    ``meter_window_cycles`` (a test hook) shortens the window, 16 .. ``uart_clock_hz``.
    """
    if not _positive_int(uart_clock_hz):
        raise ValueError(f"uart_clock_hz must be a positive int, not {uart_clock_hz!r}")
    if meter_window_cycles is None:
        window = max(round(uart_clock_hz / METER_WINDOWS_PER_SECOND), 1)
    else:
        window = meter_window_cycles
        if not _positive_int(window) or not MIN_METER_WINDOW <= window <= uart_clock_hz:
            raise ValueError(f"meter_window_cycles must be an int {MIN_METER_WINDOW} .. "
                             f"uart_clock_hz ({uart_clock_hz}), not {window!r}")
    if window < MIN_METER_WINDOW:
        raise ValueError(f"uart_clock_hz {uart_clock_hz} is too slow for the clock meter: its "
                         f"window would be {window} uart clocks, at least {MIN_METER_WINDOW}")
    return window, round(uart_clock_hz / window)


class HostBridge(wiring.Component):
    """UART requests in, engine ports driven, responses out (``docs/host-link.md``).

    Parameters
    ----------
    plan : EnginePlan
    clock_hz : int, optional
        The ``sync`` clock frequency. Single-domain mode (``uart_clock_hz`` None): required; it
        sets the divisor and INFO reports it. Two-domain mode: optional and unused (INFO
        reports the measured frequency instead).
    baud : int
        ``round(clock / baud)`` must be at least 8 and the achieved rate within 2 %, where
        ``clock`` is ``clock_hz`` (single-domain) or ``uart_clock_hz`` (two-domain).
    max_write_words : int
        Words one WRITE may carry, 1 .. 65535 (the size of the word buffer).
    uart_clock_hz : int, optional
        Two-domain mode: the UART receiver and transmitter run in the clock domain ``"uart"``
        (which the caller defines, e.g. the board's crystal) at this frequency, so nothing in the
        netlist depends on the ``sync`` frequency. Bytes cross between ``uart`` and ``sync``
        through two ``AsyncFIFO`` instances, and INFO's ``clock_hz`` is the ``sync`` frequency measured
        against ``uart`` (:func:`meter_window`; 0 until the first window was measured).
    meter_window_cycles : int, optional
        Test hook (two-domain mode only): the clock meter's window in uart clocks, default
        ``uart_clock_hz / 100`` (10 ms); the reading's resolution is ``uart_clock_hz / window`` Hz.

    Attributes
    ----------
    rx : In(1)
        UART from the host.
    tx : Out(1)
        UART to the host (registered).
    i : Out(stream.Signature(unsigned(input_lanes * input_bits)))
        To the engine's ``i``: one beat per clock while the engine takes them.
    o : In(stream.Signature(signed(logit_bits)))
        From the engine's ``o``; always ready.
    write : Out(stream.Signature(StructLayout({"addr": ..., "data": ...})))
        To the engine's ``write``.
    busy : In(1)
        The engine's ``busy``: a request starts only when it is low. INFER reports the clocks
        during which it was high from the first beat accepted to the last logit accepted (the
        increments of the engine's ``cycles`` counter over that time), counted here.

    A request is executed only after its closing ``END`` and CRC check; its payload is
    buffered in a beat memory (``beats_per_image`` beats) or a word memory
    (``max_write_words`` words). Latency: the response starts a few clocks after the request's
    closing ``END`` (INFO), after the last logit of the last run (INFER) or after the last word
    is accepted (WRITE); the link runs at one byte per ``10 * divisor`` clocks each way.
    """

    def __init__(self, plan: EnginePlan, *, clock_hz: int | None = None, baud: int,
                 max_write_words: int = DEFAULT_MAX_WRITE_WORDS,
                 uart_clock_hz: int | None = None, meter_window_cycles: int | None = None):
        if not isinstance(plan, EnginePlan):
            _reject(self, TypeError(f"plan must be an EnginePlan, not {plan!r}"))
        if (not isinstance(max_write_words, int) or isinstance(max_write_words, bool)
                or not 1 <= max_write_words <= 0xFFFF):
            _reject(self, ValueError(f"max_write_words must be an int 1..65535, not "
                                     f"{max_write_words!r}"))
        if clock_hz is not None and (not _positive_int(clock_hz) or clock_hz >= 1 << 32):
            _reject(self, ValueError(f"clock_hz must be a positive int below 2**32, not "
                                     f"{clock_hz!r}"))
        self._meter_window = self._meter_scale = None
        try:
            if uart_clock_hz is None:
                if meter_window_cycles is not None:
                    raise ValueError("meter_window_cycles needs uart_clock_hz (two-domain mode)")
                if clock_hz is None:
                    raise ValueError("clock_hz is required when uart_clock_hz is not given "
                                     "(single-domain mode: the UART runs on the sync clock)")
                self._divisor = baud_divisor(clock_hz, baud)
            else:
                if not _positive_int(uart_clock_hz) or uart_clock_hz >= 1 << 32:
                    raise ValueError(f"uart_clock_hz must be a positive int below 2**32, not "
                                     f"{uart_clock_hz!r}")
                self._divisor = baud_divisor(uart_clock_hz, baud)
                self._meter_window, self._meter_scale = meter_window(uart_clock_hz,
                                                                     meter_window_cycles)
        except ValueError as error:
            _reject(self, error)
        fmt = LinkFormat.from_plan(plan)
        if max(plan.beats_per_image, plan.out_features) > 0xFFFF:
            _reject(self, ValueError(f"beats_per_image and out_features must fit 16 bits, not "
                                     f"{plan.beats_per_image} and {plan.out_features}"))
        self._plan = plan
        self._format = fmt
        self._clock_hz = clock_hz
        self._uart_clock_hz = uart_clock_hz
        self._baud = baud
        self._max_write_words = max_write_words
        self._word = data.StructLayout({"addr": unsigned(plan.address_bits),
                                        "data": unsigned(plan.data_bits)})
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "i": Out(stream.Signature(unsigned(plan.input_lanes * plan.input_bits))),
            "o": In(stream.Signature(signed(plan.logit_bits))),
            "write": Out(stream.Signature(self._word)),
            "busy": In(1),
        })

    @property
    def plan(self) -> EnginePlan:
        return self._plan

    @property
    def divisor(self) -> int:
        """Clocks per UART bit (``uart`` clocks in two-domain mode, else ``sync`` clocks)."""
        return self._divisor

    @property
    def max_write_words(self) -> int:
        return self._max_write_words

    @property
    def clock_hz(self) -> int | None:
        """The ``sync`` frequency given (None if not given; unused in two-domain mode)."""
        return self._clock_hz

    @property
    def uart_clock_hz(self) -> int | None:
        """The ``uart`` domain's frequency, or None in single-domain mode."""
        return self._uart_clock_hz

    @property
    def two_domain(self) -> bool:
        """True if the UART runs in the ``uart`` domain (``uart_clock_hz`` given)."""
        return self._uart_clock_hz is not None

    @property
    def meter_window_cycles(self) -> int | None:
        """Two-domain mode: the clock meter's window, in ``uart`` clocks."""
        return self._meter_window

    @property
    def meter_scale(self) -> int | None:
        """Two-domain mode: Hz per ``sync`` clock counted in a window (INFO's resolution)."""
        return self._meter_scale

    def meter_tolerance_hz(self, sync_hz: int) -> int:
        """Two-domain mode: how far INFO's clock_hz may be from a ``sync`` clock of ``sync_hz``
        (measured against the ``uart`` clock, whose own tolerance comes on top): two counts of
        ``meter_scale`` Hz (one of quantization, one of synchronizer uncertainty), plus
        ``sync_hz`` times the scale's rounding when the window does not divide
        ``uart_clock_hz`` (0 for the default 10 ms window of a multiple of 100 Hz)."""
        if self._meter_window is None:
            raise ValueError("meter_tolerance_hz is for two-domain mode (uart_clock_hz given)")
        window, scale, uart_hz = self._meter_window, self._meter_scale, self._uart_clock_hz
        rounding = abs(scale * window - uart_hz) * sync_hz
        return 2 * scale + -(-rounding // uart_hz)

    def info_payload(self, clock_hz: int | None = None) -> bytes:
        """The INFO response payload this bridge sends, with ``clock_hz`` in its clock field
        (default: the ``clock_hz`` given in single-domain mode, 0 in two-domain mode, where
        the field is the measured frequency)."""
        plan = self._plan
        if clock_hz is None:
            clock_hz = 0 if self.two_domain else self._clock_hz
        return (bytes([PROTOCOL_VERSION]) + plan_fingerprint(plan).to_bytes(4, "little")
                + clock_hz.to_bytes(4, "little")
                + self._max_write_words.to_bytes(2, "little")
                + plan.beats_per_image.to_bytes(2, "little")
                + plan.out_features.to_bytes(2, "little"))

    def _uart(self, m, framer):
        """The UART, and in two-domain mode the FIFOs across to ``sync``.

        Returns ``(valid, byte, framing_error)`` in ``sync``: one received byte per ``valid``
        strobe, and the framing-error strobe (never both at once)."""
        if not self.two_domain:
            m.submodules.receiver = receiver = UARTReceiver(self._divisor)
            m.submodules.transmitter = transmitter = UARTTransmitter(self._divisor)
            wiring.connect(m, framer.o, transmitter.i)
            m.d.comb += [receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx),
                         receiver.o.ready.eq(1)]
            return receiver.o.valid, receiver.o.payload, receiver.framing_error

        to_uart = DomainRenamer({"sync": "uart"})
        m.submodules.receiver = receiver = to_uart(UARTReceiver(self._divisor))
        m.submodules.transmitter = transmitter = to_uart(UARTTransmitter(self._divisor))
        # uart -> sync: 9-bit entries, a byte (bit 8 low) or a framing error (bit 8 high).
        m.submodules.rx_fifo = rx_fifo = AsyncFIFO(width=9, depth=CDC_FIFO_DEPTH,
                                                   r_domain="sync", w_domain="uart")
        framing_pending = Signal()              # uart: a framing error not yet in the FIFO
        m.d.comb += [
            receiver.rx.eq(self.rx),
            rx_fifo.w_en.eq(receiver.o.valid | framing_pending),
            rx_fifo.w_data.eq(Mux(receiver.o.valid, receiver.o.payload, 0x100)),
            receiver.o.ready.eq(rx_fifo.w_rdy),
        ]
        with m.If(rx_fifo.w_rdy & ~receiver.o.valid):
            m.d.uart += framing_pending.eq(0)
        with m.If(receiver.framing_error):
            m.d.uart += framing_pending.eq(1)
        # The FIFO's read data (a memory's) is registered before any logic uses it.
        valid, byte, framing = Signal(), Signal(8), Signal()
        m.d.comb += rx_fifo.r_en.eq(1)
        m.d.sync += [valid.eq(rx_fifo.r_rdy & ~rx_fifo.r_data[8]), byte.eq(rx_fifo.r_data[:8]),
                     framing.eq(rx_fifo.r_rdy & rx_fifo.r_data[8])]
        # sync -> uart: wire bytes of responses.
        m.submodules.tx_fifo = tx_fifo = AsyncFIFO(width=8, depth=CDC_FIFO_DEPTH,
                                                   r_domain="uart", w_domain="sync")
        m.d.comb += [
            tx_fifo.w_en.eq(framer.o.valid),
            tx_fifo.w_data.eq(framer.o.payload),
            framer.o.ready.eq(tx_fifo.w_rdy),
            transmitter.i.valid.eq(tx_fifo.r_rdy),
            transmitter.i.payload.eq(tx_fifo.r_data),
            tx_fifo.r_en.eq(transmitter.i.ready),
            self.tx.eq(transmitter.tx),
        ]
        return valid, byte, framing

    def _clock_meter(self, m):
        """The ``sync`` frequency in Hz (32 bits, registered), 0 until a window was measured.

        ``uart`` toggles a flag every ``window`` uart clocks; ``sync`` synchronizes it and adds
        ``scale`` to a counter every clock: at each toggle after the first, the counter (sync
        clocks in the window, times ``scale``) is the frequency. No multiplier, one adder."""
        window, scale = self._meter_window, self._meter_scale
        window_timer = Signal(range(window))
        toggle = Signal()
        with m.If(window_timer == window - 1):
            m.d.uart += [window_timer.eq(0), toggle.eq(~toggle)]
        with m.Else():
            m.d.uart += window_timer.eq(window_timer + 1)

        toggle_sync = Signal()
        toggle_seen = Signal()
        started = Signal()
        accumulated = Signal(32)                # scale * sync clocks since the last toggle
        measured = Signal(32)
        m.submodules.meter_sync = FFSynchronizer(toggle, toggle_sync)
        m.d.sync += toggle_seen.eq(toggle_sync)
        with m.If(toggle_sync != toggle_seen):
            m.d.sync += [accumulated.eq(scale), started.eq(1)]
            with m.If(started):
                m.d.sync += measured.eq(accumulated)
        with m.Else():
            m.d.sync += accumulated.eq(accumulated + scale)
        return measured

    def elaborate(self, platform):
        plan, fmt = self._plan, self._format
        m = Module()
        infer_total = plan.out_features * fmt.logit_bytes + CYCLES_BYTES

        # -- named strobes and registers ---------------------------------------------------
        decoded = Signal()                      # a body byte decoded in this clock, and
        decoded_byte = Signal(8)                # its value
        restart = Signal()                      # forget the frame being received
        escaped = Signal()
        dropped = Signal()                      # bytes arrived while not receiving
        bad_crc, bad_kind, bad_length, bad_repeat = Signal(), Signal(), Signal(), Signal()
        error_code = Signal(3)
        discard_after = Signal()
        info_clock = Signal(32)                 # two-domain: a snapshot of the clock meter
        # The engine's busy flag a clock late, for WAIT_IDLE (timing: it is decoded from the
        # engine's count of images in flight). It is never stale there: only INFER makes the
        # engine busy, and the bridge is then in other states for many clocks.
        busy_seen = Signal()

        # -- submodules ----------------------------------------------------------------------
        m.submodules.framer = framer = FrameTransmitter()
        rx_valid, rx_byte, rx_framing = self._uart(m, framer)
        measured_hz = self._clock_meter(m) if self.two_domain else Const(0, 32)
        m.submodules.decoder = decoder = RequestDecoder(
            plan, max_write_words=self._max_write_words, word=self._word)
        m.submodules.executor = executor = RequestExecutor(
            plan, max_write_words=self._max_write_words, word=self._word)
        m.submodules.responder = responder = ResponseSequencer(
            plan, info_payload=self.info_payload(), measured_clock=self.two_domain)
        buffers = {name: Memory(shape=shape, depth=depth, init=[])
                   for name, (depth, shape) in buffer_shapes(plan, self._max_write_words).items()}
        for name, memory in buffers.items():
            m.submodules[name] = memory
        beat_write, beat_read = buffers["beat_buffer"].write_port(), buffers["beat_buffer"].read_port()
        word_write, word_read = buffers["word_buffer"].write_port(), buffers["word_buffer"].read_port()
        logit_write = buffers["logit_buffer"].write_port()
        logit_read = buffers["logit_buffer"].read_port()

        # -- grouped comb ------------------------------------------------------------------
        frame = decoder.frame
        m.d.comb += [
            decoder.i.valid.eq(decoded), decoder.i.data.eq(decoded_byte),
            decoder.restart.eq(restart),
            beat_write.addr.eq(decoder.beat_write.addr), beat_write.data.eq(decoder.beat_write.data),
            beat_write.en.eq(decoder.beat_write.en),
            word_write.addr.eq(decoder.word_write.addr), word_write.data.eq(decoder.word_write.data),
            word_write.en.eq(decoder.word_write.en),
            executor.infer.eq(frame.kind_infer),
            executor.write_kind.eq(~frame.kind_info & ~frame.kind_infer),
            executor.repeat.eq(frame.repeat), executor.records.eq(frame.records),
            executor.busy.eq(self.busy),
            beat_read.addr.eq(executor.feed_addr), beat_read.en.eq(executor.feed_en),
            word_read.addr.eq(executor.feed_addr), word_read.en.eq(executor.feed_en),
            self.i.valid.eq(executor.i.valid), executor.i.ready.eq(self.i.ready),
            self.i.payload.eq(beat_read.data),
            self.write.valid.eq(executor.write.valid), executor.write.ready.eq(self.write.ready),
            self.write.payload.eq(word_read.data),
            executor.o.valid.eq(self.o.valid), executor.o.payload.eq(self.o.payload),
            self.o.ready.eq(executor.o.ready),
            logit_write.addr.eq(executor.logit_write.addr),
            logit_write.en.eq(executor.logit_write.en), logit_write.data.eq(self.o.payload),
            logit_read.addr.eq(responder.logit_addr), responder.logit.eq(logit_read.data),
            responder.elapsed.eq(executor.elapsed), responder.write_count.eq(executor.write_count),
            responder.error_code.eq(error_code), responder.info_clock.eq(info_clock),
        ]
        wiring.connect(m, responder.o, framer.i)

        def respond(response_kind, response_seq, total):
            m.d.comb += [responder.start.eq(1), responder.kind.eq(response_kind),
                         responder.seq.eq(response_seq), responder.last.eq(total - 1)]
            m.next = "RESPOND"

        def nak(code, *, discard):
            m.d.sync += [error_code.eq(code), discard_after.eq(discard)]
            respond(NAK, Mux(frame.seq_known, frame.seq, 0), 1)

        with m.If(restart):
            m.d.sync += [escaped.eq(0), dropped.eq(0)]
        m.d.sync += busy_seen.eq(self.busy)
        with m.FSM() as fsm:
            with m.State("RECEIVE"):
                with m.If(rx_framing):
                    nak(FRAMING, discard=1)
                with m.Elif(rx_valid):
                    self._unescape(m, rx_byte, escaped, decoded, decoded_byte, frame, nak)
            with m.State("DISCARD"):
                with m.If(rx_valid & (rx_byte == END)):
                    m.d.comb += restart.eq(1)
                    m.next = "RECEIVE"
            with m.State("CHECK"):
                # The frame's tests are registered here and acted on in DECIDE (timing).
                m.d.sync += [bad_crc.eq(frame.bad_crc), bad_kind.eq(frame.bad_kind),
                             bad_length.eq(frame.bad_length), bad_repeat.eq(frame.bad_repeat)]
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(bad_crc):
                    nak(BAD_CRC, discard=0)
                with m.Elif(bad_kind):
                    nak(BAD_KIND, discard=0)
                with m.Elif(bad_length):
                    nak(BAD_LENGTH, discard=0)
                with m.Elif(bad_repeat):
                    nak(BAD_REPEAT, discard=0)
                with m.Else():
                    m.next = "WAIT_IDLE"
            with m.State("WAIT_IDLE"):
                with m.If(~busy_seen):
                    m.d.comb += executor.load.eq(1)
                    with m.If(frame.kind_info):
                        m.d.sync += [discard_after.eq(0), info_clock.eq(measured_hz)]
                        respond(INFO | RESPONSE, frame.seq, INFO_BYTES)
                    with m.Else():
                        m.next = "EXECUTE"
            with m.State("EXECUTE"):
                with m.If(executor.done):
                    m.d.sync += discard_after.eq(0)
                    with m.If(frame.kind_infer):
                        respond(INFER | RESPONSE, frame.seq, infer_total)
                    with m.Else():
                        respond(WRITE | RESPONSE, frame.seq, 2)
            with m.State("RESPOND"):
                with m.If(responder.done):
                    m.d.comb += restart.eq(1)
                    with m.If(discard_after | dropped | rx_valid):
                        m.next = "DISCARD"
                    with m.Else():
                        m.next = "RECEIVE"

        # Bytes that arrive while executing or answering are dropped (`dropped`: resync).
        receiving = fsm.ongoing("RECEIVE") | fsm.ongoing("DISCARD")
        with m.If(~receiving & (rx_valid | rx_framing)):
            m.d.sync += dropped.eq(1)
        return m

    @staticmethod
    def _unescape(m, byte, escaped, decoded, decoded_byte, frame, nak):
        """RECEIVE: one wire byte, SLIP-decoded into a body byte (``decoded``), or the frame's
        closing ``END`` (to CHECK), or an escape."""
        with m.If(escaped):
            m.d.sync += escaped.eq(0)
            with m.If((byte == ESC_END) | (byte == ESC_ESC)):
                m.d.comb += [decoded.eq(1), decoded_byte.eq(Mux(byte == ESC_END, END, ESC))]
            with m.Else():
                nak(BAD_ESCAPE, discard=byte != END)
        with m.Elif(byte == END):
            with m.If(frame.started | frame.pending):     # `pending`: not yet counted
                m.next = "CHECK"
        with m.Elif(byte == ESC):
            m.d.sync += escaped.eq(1)
        with m.Else():
            m.d.comb += [decoded.eq(1), decoded_byte.eq(byte)]


class LinkedEngine(wiring.Component):
    """An :class:`accel.gateware.engine.Engine` behind a :class:`HostBridge`: the board's core.

    Parameters
    ----------
    plan : EnginePlan
    clock_hz, baud, max_write_words, uart_clock_hz, meter_window_cycles
        As for :class:`HostBridge`. With ``uart_clock_hz`` the caller defines two clock
        domains: ``sync`` (the engine's and the bridge's, any frequency) and ``uart`` (at
        ``uart_clock_hz``, the UART's); without it only ``sync``, at ``clock_hz``.

    Attributes
    ----------
    rx : In(1)
        UART from the host (synchronized inside, in the UART's domain).
    tx : Out(1)
        UART to the host (registered, in the UART's domain).

    Latency and throughput: those of the engine (``docs/accelerator.md``) plus the UART
    transfer of the request and the response (``docs/host-link.md``).
    """

    def __init__(self, plan: EnginePlan, *, clock_hz: int | None = None, baud: int,
                 max_write_words: int = DEFAULT_MAX_WRITE_WORDS,
                 uart_clock_hz: int | None = None, meter_window_cycles: int | None = None):
        if not isinstance(plan, EnginePlan):
            _reject(self, TypeError(f"plan must be an EnginePlan, not {plan!r}"))
        try:
            self._bridge = HostBridge(plan, clock_hz=clock_hz, baud=baud,
                                      max_write_words=max_write_words,
                                      uart_clock_hz=uart_clock_hz,
                                      meter_window_cycles=meter_window_cycles)
        except ValueError as error:
            _reject(self, error)
        self._plan = plan
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    @property
    def plan(self) -> EnginePlan:
        return self._plan

    @property
    def bridge(self) -> HostBridge:
        return self._bridge

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = self._bridge
        m.submodules.engine = engine = Engine(self._plan)
        wiring.connect(m, bridge.i, engine.i)
        wiring.connect(m, engine.o, bridge.o)
        wiring.connect(m, bridge.write, engine.write)
        m.d.comb += [
            bridge.rx.eq(self.rx),
            self.tx.eq(bridge.tx),
            bridge.busy.eq(engine.busy),
        ]
        return m
