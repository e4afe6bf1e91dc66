"""The UART bridge's three stages, each at its own ports, in Amaranth's simulator.

``HostBridge`` (``accel.gateware.link.bridge``) is a request decoder (``link/request.py``), a
request executor (``link/execute.py``) and a response sequencer (``link/response.py``) around
three buffer memories. Each test here drives one stage alone with seeded random stimulus (idle
clocks between bytes, engine and framer backpressure, random engine latency and ``busy``) and
checks it against a small Python model of the contract its docstring and ``docs/host-link.md``
state: the frame fields and checks, every buffer write (address, data and the clock it happens
in), every beat, word and logit in order and exactly once, the counted busy clocks, the bytes of
every response, and the latency and throughput figures the docstrings give. The buffers are
modelled in the testbench as synchronous-read memories (data one clock after the address, when
enabled), as the bridge connects them. A change to one stage is then caught at that stage, not
only by the end-to-end link tests (``tests/test_accel_link.py``), which see a stage only through
the UART.
"""

from __future__ import annotations

import functools
import random
from collections import deque

import pytest
from amaranth.hdl import unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from accel.gateware.layouts import CYCLE_COUNTER_BITS
from accel.gateware.link.execute import RequestExecutor
from accel.gateware.link.request import RequestDecoder
from accel.gateware.link.response import ResponseSequencer
from accel.planning.plan import EnginePlan
from accel.protocol import (CYCLES_BYTES, INFER, INFO, INFO_BYTES, NAK, RESPONSE, WRITE,
                            LinkFormat, crc16)
from accel_models import random_inputs, random_model

#: Small plans: 4-byte beats and words of equal size with 18-bit logits in 3 bytes ("wide");
#: 9-bit beats in 2 bytes (junk above the port's width), 3-byte words, 1-byte logits
#: ("narrow"); one beat per image and a 7-bit address in its byte ("one-beat").
PLANS = {
    "wide": ([12, 7, 4], {"density": 0.5}, {"n_pes": 2}),
    "narrow": ([10, 6, 3], {"density": 0.5, "activation_bits": 3, "weight_bits": 4,
                            "index_bits": 2, "bias_bits": 3}, {"n_pes": 2, "input_lanes": 3}),
    "one-beat": ([4, 5, 3], {"density": 0.6}, {"n_pes": 1, "input_lanes": 4}),
}

#: The word buffer's depth in these tests (small, so that overflowing it is cheap).
MAX_WORDS = 5


@functools.lru_cache(maxsize=None)
def _model_and_plan(name: str):
    features, model_options, plan_options = PLANS[name]
    model = random_model(7, features, **model_options)
    return model, EnginePlan.from_model(model, **plan_options)


def _word_layout(plan: EnginePlan) -> data.StructLayout:
    return data.StructLayout({"addr": unsigned(plan.address_bits),
                              "data": unsigned(plan.data_bits)})


def _mask(bits: int) -> int:
    return (1 << bits) - 1


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


# -- request decoder ----------------------------------------------------------------------------

CHECKS = ("bad_crc", "bad_kind", "bad_length", "bad_repeat")


def _body(kind: int, seq: int, payload: bytes) -> bytes:
    """A frame's body as the SLIP decoder hands it on: kind, seq, payload, CRC low byte first."""
    body = bytes([kind, seq]) + bytes(payload)
    return body + crc16(body).to_bytes(2, "little")


def _decoder_model(plan: EnginePlan, body: bytes) -> tuple[dict, list, list]:
    """What ``RequestDecoder`` must show once all of ``body`` is counted.

    Returns ``(fields, beat_writes, word_writes)``. ``fields`` holds the frame's fields that the
    contract defines for this body (``seq`` needs 2 bytes, ``repeat`` an INFER of 6). A write is
    ``(i, addr, data)``: it happens in the clock in which body byte ``i`` is counted, i.e. two
    bytes after the record's last byte (byte ``count - 2`` enters the records when byte
    ``count`` arrives, so the CRC never does).
    """
    fmt = LinkFormat.from_plan(plan)
    count, kind = len(body), body[0]
    infer, write = kind == INFER, kind == WRITE
    fields = {
        "kind_info": int(kind == INFO), "kind_infer": int(infer), "kind_write": int(write),
        "bad_crc": int(count < 4 or crc16(body[:-2]) != int.from_bytes(body[-2:], "little")),
        "bad_kind": int(kind not in (INFO, INFER, WRITE)),
        "bad_length": 0, "bad_repeat": 0, "records": 0,
    }
    if count >= 2:
        fields["seq"] = body[1]
    beat_writes, word_writes = [], []
    if infer or write:
        head, size, limit = ((4, fmt.beat_bytes, plan.beats_per_image) if infer
                             else (2, fmt.word_bytes, MAX_WORDS))
        record_bytes = body[head:count - 2] if count - 2 > head else b""
        complete = len(record_bytes) // size
        for k in range(min(complete, limit)):       # no write beyond the buffer
            value = int.from_bytes(record_bytes[k * size:(k + 1) * size], "little")
            counted_at = head + (k + 1) * size - 1 + 2
            if infer:
                beat_writes.append((counted_at, k,
                                    value & _mask(plan.input_lanes * plan.input_bits)))
            else:
                word_writes.append((counted_at, k, (
                    value & _mask(plan.address_bits),
                    (value >> 8 * fmt.address_bytes) & _mask(plan.data_bits))))
        fields["records"] = min(complete, limit)
        if infer:
            fields["bad_length"] = int(count != 4 + fmt.infer_payload_bytes)
            if count >= 6:
                fields["repeat"] = int.from_bytes(body[2:4], "little")
                fields["bad_repeat"] = int(fields["repeat"] == 0)
        else:
            fields["bad_length"] = int(len(record_bytes) % size != 0
                                       or not 1 <= complete <= limit)
    elif kind == INFO:
        fields["bad_length"] = int(count != 4)
    return fields, beat_writes, word_writes


def _decoder_frames(model, plan: EnginePlan, rng: random.Random) -> list[tuple[str, bytes, set]]:
    """``(name, body, checks expected high)``: valid frames and corrupt ones, shuffled."""
    fmt = LinkFormat.from_plan(plan)
    width = plan.input_lanes * plan.input_bits

    def infer_payload(repeat):
        image = random_inputs(model, 1, rng.randrange(1 << 30))[0]
        beats = plan.encode_inputs(image[None, :])
        # Bits of a beat above the port's width are ignored: fill them with junk.
        junk = [rng.getrandbits(8 * fmt.beat_bytes) & ~_mask(width) for _ in beats]
        return repeat.to_bytes(2, "little") + b"".join(
            (beat | j).to_bytes(fmt.beat_bytes, "little") for beat, j in zip(beats, junk))

    def write_payload(k):
        # Whole bytes of address and data: what is above the ports' widths must be masked.
        return b"".join(rng.getrandbits(8 * fmt.address_bytes).to_bytes(fmt.address_bytes, "little")
                        + rng.getrandbits(8 * fmt.data_bytes).to_bytes(fmt.data_bytes, "little")
                        for _ in range(k))

    def seq():
        return rng.randrange(256)

    def bad_crc(body):
        index = len(body) - 1 - rng.randrange(2)
        return body[:index] + bytes([body[index] ^ rng.randrange(1, 256)]) + body[index + 1:]

    frames = [("INFO", _body(INFO, seq(), b""), set()) for _ in range(2)]
    frames += [("INFER", _body(INFER, seq(), infer_payload(rng.randint(1, 3))), set())
               for _ in range(3)]
    frames += [("INFER repeat 65535", _body(INFER, seq(), infer_payload(0xFFFF)), set())]
    frames += [(f"WRITE {k}", _body(WRITE, seq(), write_payload(k)), set())
               for k in [1, MAX_WORDS, rng.randint(1, MAX_WORDS)]]
    frames += [
        ("INFER with a wrong CRC byte", bad_crc(_body(INFER, seq(), infer_payload(1))),
         {"bad_crc"}),
        ("WRITE with a wrong CRC byte", bad_crc(_body(WRITE, seq(), write_payload(2))),
         {"bad_crc"}),
        ("INFO with a wrong CRC byte", bad_crc(_body(INFO, seq(), b"")), {"bad_crc"}),
        ("body of 3 bytes", bytes([WRITE, seq(), rng.randrange(256)]),
         {"bad_crc", "bad_length"}),
        ("unknown kind 0", _body(0, seq(), b""), {"bad_kind"}),
        ("unknown kind", _body(rng.choice([4, NAK, INFER | RESPONSE, 0xFF]), seq(),
                               rng.randbytes(rng.randrange(8))), {"bad_kind"}),
        ("INFO with a payload", _body(INFO, seq(), rng.randbytes(1)), {"bad_length"}),
        ("INFER one byte short", _body(INFER, seq(), infer_payload(2)[:-1]), {"bad_length"}),
        ("INFER one byte long", _body(INFER, seq(), infer_payload(1) + rng.randbytes(1)),
         {"bad_length"}),
        ("INFER of repeat only", _body(INFER, seq(), (1).to_bytes(2, "little")),
         {"bad_length"}),
        ("WRITE of no words", _body(WRITE, seq(), b""), {"bad_length"}),
        ("WRITE one byte short", _body(WRITE, seq(), write_payload(2)[:-1]), {"bad_length"}),
        ("WRITE one byte long", _body(WRITE, seq(), write_payload(1) + rng.randbytes(1)),
         {"bad_length"}),
        ("WRITE of max_write_words + 1", _body(WRITE, seq(), write_payload(MAX_WORDS + 1)),
         {"bad_length"}),
        ("WRITE of max_write_words + 3", _body(WRITE, seq(), write_payload(MAX_WORDS + 3)),
         {"bad_length"}),
        ("INFER repeat 0", _body(INFER, seq(), infer_payload(0)), {"bad_repeat"}),
    ]
    rng.shuffle(frames)
    return frames


@pytest.mark.parametrize("name", list(PLANS))
def test_request_decoder(name):
    """Every frame's fields, checks and buffer writes; byte latency; ``restart``.

    Bytes come with random idle clocks between them; some frames are preceded by a random
    partial frame and a ``restart`` (as the bridge's DISCARD does), all are followed by one.
    """
    model, plan = _model_and_plan(name)
    rng = random.Random(f"decoder-{name}")
    frames = _decoder_frames(model, plan, rng) + _decoder_frames(model, plan, rng)
    dut = RequestDecoder(plan, max_write_words=MAX_WORDS, word=_word_layout(plan))
    frame = dut.frame

    for frame_name, body, intended in frames:       # the model against the docs first
        fields, _, _ = _decoder_model(plan, body)
        assert {c for c in CHECKS if fields[c]} == intended, frame_name

    async def testbench(ctx):
        async def clock(index=None, byte=0, restart=0):
            """One clock with body byte ``index`` (None: idle) offered; the next clock's view."""
            ctx.set(dut.i.valid, index is not None)
            ctx.set(dut.i.data, byte)
            ctx.set(dut.restart, restart)
            await ctx.tick()
            view = {"pending": index, "pending_flag": ctx.get(frame.pending),
                    "started": ctx.get(frame.started), "seq_known": ctx.get(frame.seq_known),
                    "beat": None, "word": None}
            if ctx.get(dut.beat_write.en):
                view["beat"] = (ctx.get(dut.beat_write.addr), ctx.get(dut.beat_write.data))
            if ctx.get(dut.word_write.en):
                view["word"] = (ctx.get(dut.word_write.addr),
                                (ctx.get(dut.word_write.data.addr),
                                 ctx.get(dut.word_write.data.data)))
            return view

        async def send(body):
            views = []
            for index, byte in enumerate(body):
                for _ in range(rng.choice([0, 0, 0, 1, 2, 4])):
                    views.append(await clock())
                views.append(await clock(index, byte))
            views.append(await clock())
            return views

        async def restart():
            await clock(restart=1)
            await clock()
            for field in ("started", "seq_known", "records", "pending"):
                assert ctx.get(getattr(frame, field)) == 0, f"{field} after restart"
            assert ctx.get(frame.bad_crc) == 1            # nothing counted: shorter than 4

        for frame_name, body, _ in frames:
            if rng.random() < 0.3:                        # a partial frame, forgotten
                await send(rng.randbytes(rng.randint(1, 9)))
                await restart()
            views = await send(body)
            fields, beat_writes, word_writes = _decoder_model(plan, body)
            got = {field: ctx.get(getattr(frame, field)) for field in fields}
            assert got == fields, frame_name

            # Latency: a byte offered in clock n is pending (registered) in n + 1 and counted
            # there: ``started`` and ``seq_known`` see it from n + 2.
            counted = 0
            for view in views:
                assert view["pending_flag"] == (view["pending"] is not None), frame_name
                assert view["started"] == (counted >= 1), frame_name
                assert view["seq_known"] == (counted >= 2), frame_name
                counted += view["pending"] is not None
            # Exactly the expected records, each written once, to its address, in the clock
            # its byte count says.
            assert [(v["pending"],) + v["beat"] for v in views if v["beat"]] == beat_writes, \
                frame_name
            assert [(v["pending"],) + v["word"] for v in views if v["word"]] == word_writes, \
                frame_name
            await restart()

    _run(dut, testbench)


# -- request executor ---------------------------------------------------------------------------

class _EngineModel:
    """The engine's side of the executor's ports, and the beat and word buffers.

    The requests below draw ``i.ready`` / ``write.ready`` high with chance ``ready_p``. A
    run's logits start a random 1 .. 12 clocks after its last beat was taken and come with
    random gaps, runs in order. ``busy`` is a free input of the executor, so it is drawn at
    random: mostly high while an image is in flight, sometimes high otherwise, so that the
    edges of the counting window matter.
    """

    def __init__(self, plan: EnginePlan, rng: random.Random):
        self.plan, self.rng = plan, rng
        width = plan.input_lanes * plan.input_bits
        self.beats = [rng.getrandbits(width) for _ in range(plan.beats_per_image)]
        self.words = [(rng.getrandbits(plan.address_bits), rng.getrandbits(plan.data_bits))
                      for _ in range(MAX_WORDS)]
        self.beat_read = self.word_read = None      # the memories' registered read data


async def _executor_clock(ctx, dut, engine, *, i_ready, write_ready, o_valid, busy, load=0):
    """Drive one clock, sample the executor's outputs, tick, update the modelled memories."""
    plan = engine.plan
    ctx.set(dut.load, load)
    ctx.set(dut.i.ready, i_ready)
    ctx.set(dut.write.ready, write_ready)
    ctx.set(dut.o.valid, o_valid)
    ctx.set(dut.o.payload, engine.rng.randrange(-(1 << (plan.logit_bits - 1)),
                                                1 << (plan.logit_bits - 1)))
    ctx.set(dut.busy, busy)
    out = {name: ctx.get(signal) for name, signal in [
        ("i_valid", dut.i.valid), ("write_valid", dut.write.valid), ("o_ready", dut.o.ready),
        ("feed_en", dut.feed_en), ("feed_addr", dut.feed_addr), ("done", dut.done),
        ("logit_en", dut.logit_write.en), ("logit_addr", dut.logit_write.addr)]}
    out["beat"], out["word"] = engine.beat_read, engine.word_read
    await ctx.tick()
    if out["feed_en"]:                               # synchronous read: data a clock later
        address = out["feed_addr"]
        engine.beat_read = engine.beats[address] if address < len(engine.beats) else None
        engine.word_read = engine.words[address] if address < len(engine.words) else None
    return out


async def _run_infer(ctx, dut, engine, repeat: int, ready_p: float):
    plan, rng = engine.plan, engine.rng
    beats, out_features = plan.beats_per_image, plan.out_features
    total_logits = repeat * out_features
    for _ in range(rng.randint(0, 3)):
        out = await _executor_clock(ctx, dut, engine, i_ready=1, write_ready=1, o_valid=0,
                                    busy=rng.random() < 0.3)
        assert not (out["i_valid"] or out["write_valid"] or out["done"])
    ctx.set(dut.infer, 1)
    ctx.set(dut.write_kind, 0)
    ctx.set(dut.repeat, repeat)
    ctx.set(dut.records, rng.randint(0, MAX_WORDS))  # not used by INFER
    fed, fed_clocks, logit_addrs, done_clocks, busy_log = [], [], [], [], []
    outputs = deque()                                # clock from which each run's logits may leave
    first_beat = last_logit = elapsed = None
    logits_out = 0
    t = 0
    while last_logit is None or t <= last_logit + 3:
        assert t < 2000, "INFER did not finish"
        in_flight = fed and logits_out < total_logits
        o_valid = (bool(outputs) and outputs[0] <= t and rng.random() < 0.7)
        busy = int(rng.random() < (0.9 if in_flight else 0.3))
        i_ready = int(rng.random() < ready_p)
        out = await _executor_clock(ctx, dut, engine, i_ready=i_ready, write_ready=1,
                                    o_valid=o_valid, busy=busy, load=int(t == 0))
        assert out["o_ready"] == 1 and out["write_valid"] == 0
        assert out["logit_en"] == o_valid            # every logit written, nothing else
        if t > 0 and last_logit is not None and t > last_logit:
            assert out["i_valid"] == 0, "a beat offered after done"
        if out["i_valid"] and i_ready:
            fed.append(out["beat"])
            fed_clocks.append(t)
            first_beat = t if first_beat is None else first_beat
            if len(fed) % beats == 0:
                outputs.append(t + rng.randint(1, 12))
        if o_valid:
            logit_addrs.append(out["logit_addr"])
            logits_out += 1
            if logits_out % out_features == 0:
                outputs.popleft()
            if logits_out == total_logits:
                last_logit = t
        if out["done"]:
            done_clocks.append(t)
        busy_log.append(busy)
        t += 1
        if done_clocks and t == done_clocks[0] + 1:
            elapsed = ctx.get(dut.elapsed)           # set with done
    label = f"INFER repeat {repeat}, ready {ready_p}"
    assert fed == engine.beats * repeat, label                  # in order, exactly once
    assert logit_addrs == list(range(out_features)) * repeat, label
    assert done_clocks == [last_logit], label                   # once, with the last logit
    # The counting rule (execute.py): the busy clocks from the clock in which the first beat
    # is taken (included) to the clock in which the last logit of the last run arrives
    # (excluded): the increments of the engine's `cycles` counter between those two clocks.
    assert elapsed == sum(busy_log[first_beat:last_logit]), label
    if ready_p == 1:                                            # one beat per clock
        assert fed_clocks == list(range(fed_clocks[0], fed_clocks[0] + repeat * beats)), label
    ctx.set(dut.infer, 0)


async def _run_write(ctx, dut, engine, records: int, ready_p: float):
    rng = engine.rng
    ctx.set(dut.infer, 0)
    ctx.set(dut.write_kind, 1)
    ctx.set(dut.records, records)
    ctx.set(dut.repeat, rng.randint(0, 3))           # not used by WRITE
    words, word_clocks, done_clocks = [], [], []
    t = 0
    while not done_clocks or t <= done_clocks[0] + 3:
        assert t < 500, "WRITE did not finish"
        write_ready = int(rng.random() < ready_p)
        out = await _executor_clock(ctx, dut, engine, i_ready=1, write_ready=write_ready,
                                    o_valid=0, busy=rng.random() < 0.3, load=int(t == 0))
        assert out["i_valid"] == 0 and out["logit_en"] == 0
        if out["write_valid"] and write_ready:
            words.append(out["word"])
            word_clocks.append(t)
        if out["done"]:
            done_clocks.append(t)
        t += 1
    label = f"WRITE {records}, ready {ready_p}"
    assert words == engine.words[:records], label               # in order, exactly once
    assert done_clocks == [word_clocks[-1]], label              # once, with the last word
    assert ctx.get(dut.write_count) == records, label
    if ready_p == 1:                                            # one word per clock
        assert word_clocks == list(range(word_clocks[0], word_clocks[0] + records)), label
    ctx.set(dut.write_kind, 0)


async def _run_info(ctx, dut, engine, records: int):
    """INFO loads with neither ``infer`` nor ``write_kind``: nothing runs."""
    ctx.set(dut.infer, 0)
    ctx.set(dut.write_kind, 0)
    ctx.set(dut.records, records)
    for t in range(8):
        out = await _executor_clock(ctx, dut, engine, i_ready=1, write_ready=1, o_valid=0,
                                    busy=0, load=int(t == 0))
        assert not (out["i_valid"] or out["write_valid"] or out["done"]), "INFO ran"
    assert ctx.get(dut.write_count) == records


@pytest.mark.parametrize("name", list(PLANS))
def test_request_executor(name):
    """INFER runs (beats, logits, ``done``, ``elapsed``, throughput), WRITE runs, INFO."""
    _, plan = _model_and_plan(name)
    rng = random.Random(f"executor-{name}")
    dut = RequestExecutor(plan, max_write_words=MAX_WORDS, word=_word_layout(plan))
    engine = _EngineModel(plan, rng)

    async def testbench(ctx):
        await _run_infer(ctx, dut, engine, rng.randint(1, 3), 0.6)
        await _run_infer(ctx, dut, engine, 3, 1.0)
        await _run_write(ctx, dut, engine, rng.randint(1, MAX_WORDS), 0.5)
        await _run_info(ctx, dut, engine, rng.randint(0, MAX_WORDS))
        await _run_infer(ctx, dut, engine, 1, 0.3)
        await _run_write(ctx, dut, engine, MAX_WORDS, 1.0)
        await _run_infer(ctx, dut, engine, 2, 0.8)
        await _run_write(ctx, dut, engine, 1, 0.4)
        for _ in range(6):
            if rng.random() < 0.7:
                await _run_infer(ctx, dut, engine, rng.randint(1, 3), rng.choice([0.3, 0.7, 1]))
            else:
                await _run_write(ctx, dut, engine, rng.randint(1, MAX_WORDS), rng.choice([0.5, 1]))

    _run(dut, testbench)


# -- response sequencer -------------------------------------------------------------------------

def _expected_payload(plan, kind, *, info_payload, measured_clock, info_clock, logits,
                      elapsed, write_count, error_code) -> bytes:
    """A response's payload as ``docs/host-link.md`` defines it."""
    fmt = LinkFormat.from_plan(plan)
    if kind == INFO | RESPONSE:
        if measured_clock:
            return info_payload[:5] + info_clock.to_bytes(4, "little") + info_payload[9:]
        return info_payload
    if kind == INFER | RESPONSE:
        return b"".join(int(v).to_bytes(fmt.logit_bytes, "little", signed=True)
                        for v in logits) + elapsed.to_bytes(CYCLES_BYTES, "little")
    if kind == WRITE | RESPONSE:
        return write_count.to_bytes(2, "little")
    return bytes([error_code])


@pytest.mark.parametrize("name, measured_clock",
                         [("wide", False), ("narrow", True), ("one-beat", True)])
def test_response_sequencer(name, measured_clock):
    """INFO, INFER, WRITE and NAK responses under random ``o.ready``: bytes, ``last``,
    ``done``, and the latency and throughput the docstring gives."""
    _, plan = _model_and_plan(name)
    rng = random.Random(f"response-{name}-{measured_clock}")
    fmt = LinkFormat.from_plan(plan)
    bits = plan.logit_bits
    info_payload = rng.randbytes(INFO_BYTES)
    dut = ResponseSequencer(plan, info_payload=info_payload, measured_clock=measured_clock)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    infer_total = plan.out_features * fmt.logit_bytes + CYCLES_BYTES

    async def respond(ctx, kind, ready_p):
        seq = rng.randrange(256)
        logits = [rng.choice([lo, hi, -1, 0, rng.randint(lo, hi)])
                  for _ in range(plan.out_features)]
        inputs = {"elapsed": rng.choice([rng.getrandbits(CYCLE_COUNTER_BITS),
                                         rng.getrandbits(12)]),
                  "write_count": rng.getrandbits(16), "error_code": rng.randint(1, 6),
                  "info_clock": rng.getrandbits(32)}
        for field, value in inputs.items():
            ctx.set(getattr(dut, field), value)
        payload = _expected_payload(plan, kind, info_payload=info_payload,
                                    measured_clock=measured_clock, logits=logits, **inputs)
        expected = bytes([kind, seq]) + payload
        last = {INFO | RESPONSE: INFO_BYTES, INFER | RESPONSE: infer_total,
                WRITE | RESPONSE: 2}.get(kind, 1) - 1
        assert last + 1 == fmt.response_bytes(kind) == len(payload)
        label = f"kind {kind:#x}, ready {ready_p}"

        # The start clock (t = 0): kind, seq and last are taken in this clock only.
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.start, 1)
        ctx.set(dut.kind, kind)
        ctx.set(dut.seq, seq)
        ctx.set(dut.last, last)
        assert ctx.get(dut.o.valid) == 0, "not idle at start"
        logit_read = rng.randint(lo, hi)
        ctx.set(dut.logit, logit_read)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.kind, rng.randrange(256))
        ctx.set(dut.seq, rng.randrange(256))
        ctx.set(dut.last, rng.getrandbits(len(dut.last)))
        taken, taken_clocks, done_clocks = [], [], []
        offers = {}
        t = 1
        extra = rng.choice([0, 0, 2])       # 0: the next start in the clock after done
        while not done_clocks or t <= done_clocks[0] + extra:
            assert t < 1000, f"{label}: no done"
            ready = int(rng.random() < ready_p)
            ctx.set(dut.o.ready, ready)
            valid = ctx.get(dut.o.valid)
            byte, is_last = ctx.get(dut.o.payload.data), ctx.get(dut.o.payload.last)
            address = ctx.get(dut.logit_addr)
            if done_clocks:
                assert valid == 0, f"{label}: a byte offered after done"
            if valid:
                offers.setdefault(len(taken), t)
                # `last` only on the final byte (kind and seq are never the final one).
                assert is_last == (len(taken) == len(expected) - 1), label
                if ready:
                    taken.append(byte)
                    taken_clocks.append(t)
            if ctx.get(dut.done):
                done_clocks.append(t)
            await ctx.tick()
            # The logit buffer: a synchronous read of a modelled memory (junk past its end).
            logit_read = logits[address] if address < len(logits) else rng.randint(lo, hi)
            ctx.set(dut.logit, logit_read)
            t += 1
        assert bytes(taken) == expected, label
        assert done_clocks == [taken_clocks[-1]], label           # in the final byte's clock
        assert offers[0] == 1, f"{label}: kind not offered the clock after start"
        # Kind and seq take one clock each: seq is offered the clock after the kind is taken.
        assert offers[1] == taken_clocks[0] + 1, label
        # Each payload byte takes at least 3 clocks from the previous byte taken.
        gaps = [b - a for a, b in zip(taken_clocks[1:], taken_clocks[2:])]
        assert min(gaps) >= 3, f"{label}: payload byte gaps {gaps}"
        if ready_p == 1:
            assert taken_clocks[:2] == [1, 2], label

    async def testbench(ctx):
        kinds = [INFO | RESPONSE, INFER | RESPONSE, WRITE | RESPONSE, NAK]
        for kind in kinds:                                  # each kind, always ready
            await respond(ctx, kind, 1.0)
        for _ in range(3):
            for kind in rng.sample(kinds, len(kinds)):      # backpressure, random order
                for _ in range(rng.choice([0, 0, 1, 3])):
                    await ctx.tick()
                await respond(ctx, kind, rng.choice([0.3, 0.6]))

    _run(dut, testbench)
