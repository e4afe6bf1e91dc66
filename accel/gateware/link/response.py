"""The bridge's response sequencer: kind, sequence number and payload bytes of a response, one
at a time, into the framer."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.framing import BODY_BYTE
from accel.gateware.layouts import CYCLE_COUNTER_BITS
from accel.planning.plan import EnginePlan
from accel.protocol import CYCLES_BYTES, INFER, INFO, INFO_BYTES, RESPONSE, WRITE, LinkFormat

__all__ = ["ResponseSequencer"]


class ResponseSequencer(wiring.Component):
    """Send one response: its kind, its sequence number, then its payload bytes.

    Parameters
    ----------
    plan : EnginePlan
    info_payload : bytes
        INFO's payload (``INFO_BYTES`` bytes).
    measured_clock : bool
        INFO's clock field (bytes 5 .. 8) is ``info_clock`` rather than ``info_payload``'s.

    Attributes
    ----------
    start : In(1)
        Strobe: send a response of ``kind`` and ``seq`` with ``last + 1`` payload bytes (taken
        in this clock; the sequencer must be idle).
    kind, seq : In(8)
    last : In(range)
        Payload bytes minus one.
    logit_addr : Out(range(out_features + 1))
        INFER: the logit buffer's read address (a synchronous read).
    logit : In(signed(logit_bits))
        The logit buffer's read data.
    elapsed : In(CYCLE_COUNTER_BITS)
        INFER: the engine's busy clocks.
    write_count : In(16)
        WRITE: the words written.
    error_code : In(3)
        NAK: the error.
    info_clock : In(32)
        INFO: the measured clock (with ``measured_clock``).
    o : Out(stream.Signature(BODY_BYTE))
        To the framer (``last`` on the final payload byte).
    done : Out(1)
        Strobe: the final byte was taken (the sequencer is idle from the next clock).

    Latency and throughput: the kind is offered in the clock after ``start``; each payload byte
    takes at least 3 clocks (the logit read settles; the byte is registered before the framer's
    CRC takes it; sent), the kind and sequence number one each.
    """

    def __init__(self, plan: EnginePlan, *, info_payload: bytes, measured_clock: bool):
        self._plan, self._format = plan, LinkFormat.from_plan(plan)
        self._info_payload, self._measured_clock = info_payload, measured_clock
        fmt = self._format
        infer_total = plan.out_features * fmt.logit_bytes + CYCLES_BYTES
        self._last_range = range(max(INFO_BYTES, infer_total, 2) + 1)
        super().__init__({
            "start": In(1), "kind": In(8), "seq": In(8), "last": In(self._last_range),
            "logit_addr": Out(range(plan.out_features + 1)),
            "logit": In(signed(plan.logit_bits)),
            "elapsed": In(CYCLE_COUNTER_BITS), "write_count": In(16), "error_code": In(3),
            "info_clock": In(32),
            "o": Out(stream.Signature(BODY_BYTE)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        plan, fmt = self._plan, self._format
        out_features = plan.out_features
        m = Module()
        resp_kind = Signal(8)
        resp_seq = Signal(8)
        resp_last = Signal(self._last_range)    # payload bytes - 1
        resp_index = Signal.like(resp_last)
        resp_neuron = Signal(range(out_features + 1))
        resp_byte = Signal(range(max(fmt.logit_bytes, CYCLES_BYTES)))
        resp_payload = Signal(8)
        resp_payload_byte = Signal(8)
        m.d.comb += self.logit_addr.eq(resp_neuron)
        with m.If(self.start):
            m.d.sync += [resp_kind.eq(self.kind), resp_seq.eq(self.seq),
                         resp_last.eq(self.last)]

        # The payload byte at ``resp_index`` (``resp_neuron``, ``resp_byte`` in INFER).
        logit_bytes = Signal(8 * fmt.logit_bytes)
        m.d.comb += logit_bytes.eq(self.logit.as_signed())
        info_constant = Const(int.from_bytes(self._info_payload, "little"), 8 * INFO_BYTES)
        if self._measured_clock:                # the clock field (bytes 5 .. 8) is measured
            info_bytes = Cat(info_constant[:40], self.info_clock, info_constant[72:])
        else:
            info_bytes = info_constant
        with m.Switch(resp_kind):
            with m.Case(INFO | RESPONSE):
                m.d.comb += resp_payload.eq(info_bytes.word_select(resp_index, 8))
            with m.Case(INFER | RESPONSE):
                m.d.comb += resp_payload.eq(Mux(resp_neuron != out_features,
                                                logit_bytes.word_select(resp_byte, 8),
                                                self.elapsed.word_select(resp_byte, 8)))
            with m.Case(WRITE | RESPONSE):
                m.d.comb += resp_payload.eq(self.write_count.word_select(resp_index[0], 8))
            with m.Default():
                m.d.comb += resp_payload.eq(self.error_code)

        # The payload counters start here, not at ``start``: fewer registers on the paths from
        # every condition that answers (timing).
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.next = "KIND"
            with m.State("KIND"):
                m.d.sync += [resp_index.eq(0), resp_neuron.eq(0), resp_byte.eq(0)]
                m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(resp_kind)]
                with m.If(self.o.ready):
                    m.next = "SEQ"
            with m.State("SEQ"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(resp_seq)]
                with m.If(self.o.ready):
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.next = "LATCH"                        # the logit read settles
            with m.State("LATCH"):
                # The byte is registered before the framer's CRC takes it (timing).
                m.d.sync += resp_payload_byte.eq(resp_payload)
                m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                last = resp_index == resp_last     # no subtractor on the path to ``done``
                m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(resp_payload_byte),
                             self.o.payload.last.eq(last)]
                with m.If(self.o.ready):
                    m.d.sync += resp_index.eq(resp_index + 1)
                    in_logits = (resp_kind == (INFER | RESPONSE)) & (resp_neuron != out_features)
                    with m.If(in_logits & (resp_byte == fmt.logit_bytes - 1)):
                        m.d.sync += [resp_byte.eq(0), resp_neuron.eq(resp_neuron + 1)]
                    with m.Else():
                        m.d.sync += resp_byte.eq(resp_byte + 1)
                    with m.If(last):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "FETCH"
        return m
