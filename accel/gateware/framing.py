"""SLIP framing with the CRC-16 appended, for the host link's responses
(``docs/host-link.md``); the CRC one byte per clock."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from accel.protocol import END, ESC, ESC_END, ESC_ESC, crc16

__all__ = ["FrameTransmitter"]


def _crc_step(crc, byte):
    """CRC-16/CCITT-FALSE of one more byte, one clock: each output bit is an XOR of inputs."""
    def response(crc_in, byte_in):
        return crc16(bytes([byte_in]), crc_in)
    bits = []
    for i in range(16):
        terms = [crc[j] for j in range(16) if response(1 << j, 0) >> i & 1]
        terms += [byte[j] for j in range(8) if (response(0, 1 << j) ^ response(0, 0)) >> i & 1]
        value = terms[0]
        for term in terms[1:]:
            value = value ^ term
        bits.append(value)
    return Cat(*bits)


#: A byte of a frame body on its way to :class:`FrameTransmitter`.
BODY_BYTE = data.StructLayout({"data": 8, "last": 1})


class FrameTransmitter(wiring.Component):
    """SLIP-frame a body and append its CRC-16: ``END``, escaped body, escaped CRC, ``END``.

    Attributes
    ----------
    i : In(stream.Signature(BODY_BYTE))
        Body bytes (``kind, seq, payload``); ``last`` marks the frame's last byte.
    o : Out(stream.Signature(8))
        Wire bytes. The CRC (low byte first) is computed one byte per clock as bytes are taken.

    Throughput: one wire byte per clock when ``o`` is always ready (two clocks per body byte).
    """

    def __init__(self):
        super().__init__({"i": In(stream.Signature(BODY_BYTE)),
                          "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        crc = Signal(16, init=0xFFFF)
        held = Signal(8)
        held_last = Signal()
        tail = Signal(range(3))                 # 0 body byte, 1 CRC low byte, 2 CRC high byte
        special = Signal()

        m.d.comb += special.eq((held == END) | (held == ESC))

        def next_byte():
            with m.If(tail == 0):
                with m.If(held_last):
                    m.d.sync += [held.eq(crc[:8]), tail.eq(1)]
                    m.next = "SEND"
                with m.Else():
                    m.next = "TAKE"
            with m.Elif(tail == 1):
                m.d.sync += [held.eq(crc[8:]), tail.eq(2)]
                m.next = "SEND"
            with m.Else():
                m.next = "FINISH"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    m.d.sync += [crc.eq(0xFFFF), tail.eq(0)]
                    m.next = "START"
            with m.State("START"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(END)]
                with m.If(self.o.ready):
                    m.next = "TAKE"
            with m.State("TAKE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [held.eq(self.i.payload.data), held_last.eq(self.i.payload.last),
                                 crc.eq(_crc_step(crc, self.i.payload.data))]
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(Mux(special, ESC, held))]
                with m.If(self.o.ready):
                    with m.If(special):
                        m.next = "ESCAPED"
                    with m.Else():
                        next_byte()
            with m.State("ESCAPED"):
                m.d.comb += [self.o.valid.eq(1),
                             self.o.payload.eq(Mux(held == END, ESC_END, ESC_ESC))]
                with m.If(self.o.ready):
                    next_byte()
            with m.State("FINISH"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(END)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
