"""The bridge's request decoder: a frame's body bytes into its kind, sequence number, CRC and
payload records (beats or words, written to their buffers), and the frame's checks."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from accel.gateware.framing import _crc_step
from accel.planning.plan import EnginePlan
from accel.protocol import INFER, INFO, WRITE, LinkFormat

__all__ = ["RequestDecoder"]


def _write_port(addr_shape, data_shape) -> data.StructLayout:
    return data.StructLayout({"addr": addr_shape, "data": data_shape, "en": 1})


class RequestDecoder(wiring.Component):
    """Assemble a request frame from its decoded body bytes (``docs/host-link.md``).

    Byte ``count`` arrives; byte ``count - 2`` is then known to be part of the kind, sequence
    number or payload, never of the CRC, so it enters the CRC and the payload records.

    Parameters
    ----------
    plan : EnginePlan
    max_write_words : int
        Words the word buffer holds.
    word : StructLayout
        A WRITE word (``addr``, ``data``).

    Attributes
    ----------
    i : In(StructLayout({"valid": 1, "data": 8}))
        A body byte (SLIP escapes already decoded), at most one per clock; registered here
        before the frame's registers take it (timing).
    restart : In(1)
        Strobe: forget the frame (its count, CRC and records; the kind, ``seq`` and ``repeat``
        keep their values, unused until the next frame sets them).
    frame : Out(...)
        The frame so far: ``pending`` (a byte registered, not yet counted), ``started`` (a byte
        counted), ``seq_known`` (the sequence number has arrived), ``kind_info``,
        ``kind_infer``, ``kind_write``, ``seq``, ``repeat``, ``records`` (beats or words
        complete); and its checks, valid once the closing ``END`` has arrived and ``pending``
        is low: ``bad_crc``, ``bad_kind``, ``bad_length``, ``bad_repeat``.
    beat_write, word_write : Out(StructLayout({"addr", "data", "en"}))
        The beat and word buffers' write ports: a record is written in the clock the byte two
        after its last byte is counted (a byte is known not to be the CRC only then), if the
        buffer has room (else the frame overflows: ``bad_length``).

    Latency: a byte is counted a clock after ``i.valid``.
    """

    def __init__(self, plan: EnginePlan, *, max_write_words: int, word: data.StructLayout):
        self._plan, self._max_words, self._word = plan, max_write_words, word
        self._format = fmt = LinkFormat.from_plan(plan)
        self._record_bytes = max(fmt.beat_bytes, fmt.word_bytes)
        self._count_max = 4 + max(fmt.infer_payload_bytes, max_write_words * fmt.word_bytes) + 1
        # Records received: 0 .. the larger buffer's depth.
        self._records = max(plan.beats_per_image, max_write_words)
        index = unsigned(self._records.bit_length())
        frame = data.StructLayout({
            "pending": 1, "started": 1, "seq_known": 1,
            "kind_info": 1, "kind_infer": 1, "kind_write": 1, "seq": 8, "repeat": 16,
            "records": index,
            "bad_crc": 1, "bad_kind": 1, "bad_length": 1, "bad_repeat": 1,
        })
        super().__init__({
            "i": In(data.StructLayout({"valid": 1, "data": 8})),
            "restart": In(1),
            "frame": Out(frame),
            "beat_write": Out(_write_port(index, unsigned(plan.input_lanes * plan.input_bits))),
            "word_write": Out(_write_port(index, word)),
        })

    def elaborate(self, platform):
        plan, fmt = self._plan, self._format
        m = Module()
        beats, max_words = plan.beats_per_image, self._max_words
        record_bytes, count_max = self._record_bytes, self._count_max
        beat_width = plan.input_lanes * plan.input_bits
        got = Signal()
        got_byte = Signal(8)
        count = Signal(range(count_max + 1))    # body bytes received (saturating)
        # The request's kind byte, as the flags kind == INFO, INFER, WRITE (timing: no
        # comparator on the paths that use it)
        kind_info, kind_infer, kind_write = Signal(), Signal(), Signal()
        seq = Signal(8)
        hist1 = Signal(8)                       # the last body byte received
        hist2 = Signal(8)                       # the one before
        crc = Signal(16, init=0xFFFF)           # over the bytes known not to be the CRC
        repeat = Signal(16)
        record = Signal(8 * record_bytes)       # payload bytes assembling a beat or a word
        record_phase = Signal(range(record_bytes))
        record_index = Signal(range(self._records + 1))
        overflow = Signal()

        # Byte `count - 2` (`hist2`) enters the CRC and the records.
        shifted = Cat(record[8:], hist2)
        new_beat = shifted[8 * (record_bytes - fmt.beat_bytes):][:beat_width]
        # A word is its address bytes then its data bytes: each field from its own bytes.
        raw_word = shifted[8 * (record_bytes - fmt.word_bytes):]
        new_word = Signal(self._word)
        m.d.comb += [
            new_word.addr.eq(raw_word[:plan.address_bits]),
            new_word.data.eq(raw_word[8 * fmt.address_bytes:][:plan.data_bits]),
        ]
        is_infer_beat = kind_infer & (count >= 6)
        is_write_word = kind_write & (count >= 4)
        record_size = Mux(kind_infer, fmt.beat_bytes, fmt.word_bytes)
        record_done = record_phase == record_size - 1
        m.d.sync += [got.eq(self.i.valid), got_byte.eq(self.i.data)]
        with m.If(got):
            m.d.sync += [hist1.eq(got_byte), hist2.eq(hist1)]
            with m.If(count != count_max):
                m.d.sync += count.eq(count + 1)
            with m.If(count == 0):
                m.d.sync += [kind_info.eq(got_byte == INFO),
                             kind_infer.eq(got_byte == INFER), kind_write.eq(got_byte == WRITE)]
            with m.If(count == 1):
                m.d.sync += seq.eq(got_byte)
            with m.If(count >= 2):
                m.d.sync += crc.eq(_crc_step(crc, hist2))
            with m.If(kind_infer & (count == 4)):
                m.d.sync += repeat[:8].eq(hist2)
            with m.If(kind_infer & (count == 5)):
                m.d.sync += repeat[8:].eq(hist2)
            with m.If(is_infer_beat | is_write_word):
                m.d.sync += [record.eq(shifted),
                             record_phase.eq(Mux(record_done, 0, record_phase + 1))]
                with m.If(record_done):
                    limit = Mux(kind_infer, beats, max_words)
                    with m.If(record_index < limit):
                        m.d.sync += record_index.eq(record_index + 1)
                    with m.Else():
                        m.d.sync += overflow.eq(1)
        m.d.comb += [
            self.beat_write.addr.eq(record_index),
            self.beat_write.data.eq(new_beat),
            self.beat_write.en.eq(got & is_infer_beat & record_done & (record_index < beats)),
            self.word_write.addr.eq(record_index),
            self.word_write.data.eq(new_word),
            self.word_write.en.eq(got & is_write_word & record_done
                                  & (record_index < max_words)),
        ]
        with m.If(self.restart):
            m.d.sync += [count.eq(0), crc.eq(0xFFFF), record_phase.eq(0), record_index.eq(0),
                         overflow.eq(0)]

        # The frame's checks (``docs/host-link.md``, "Errors").
        write_ok = (record_phase == 0) & (record_index != 0) & ~overflow
        frame = self.frame
        m.d.comb += [
            frame.pending.eq(got), frame.started.eq(count != 0), frame.seq_known.eq(count >= 2),
            frame.kind_info.eq(kind_info), frame.kind_infer.eq(kind_infer),
            frame.kind_write.eq(kind_write), frame.seq.eq(seq), frame.repeat.eq(repeat),
            frame.records.eq(record_index),
            frame.bad_crc.eq((count < 4) | (crc != Cat(hist2, hist1))),
            frame.bad_kind.eq(~kind_info & ~kind_infer & ~kind_write),
            frame.bad_length.eq((kind_info & (count != 4))
                                | (kind_infer & (count != 4 + fmt.infer_payload_bytes))
                                | (kind_write & ~write_ok)),
            frame.bad_repeat.eq(kind_infer & (repeat == 0)),
        ]
        return m
