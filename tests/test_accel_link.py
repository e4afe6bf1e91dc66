"""The UART host link (``docs/host-link.md``): UART, framing, and the whole path host -> board.

The board is ``LinkedEngine`` in Amaranth's simulator (:class:`accel.verification.link_sim.SimulatedBoard`);
every result is compared with ``sim.run`` (the golden model), never with fixed numbers. Faults
are injected on the wire in both directions.
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

import sim
from accel.gateware.link import HostBridge, LinkedEngine
from accel.gateware.uart import UARTReceiver, UARTTransmitter, baud_divisor
from accel.host import HostLink, LinkError
from accel.planning.plan import EnginePlan
from accel.protocol import (BAD_CRC, BAD_ESCAPE, BAD_KIND, BAD_LENGTH, BAD_REPEAT, END, ESC,
                            FRAMING, INFER, INFO, NAK, RESPONSE, WRITE, Frame, FrameDecoder,
                            FrameError, LinkFormat, crc16, encode_frame, plan_fingerprint,
                            slip_encode)
from accel.verification.link_sim import SimulatedBoard
from accel_models import random_inputs, random_model
from core.artifact import CompressedLayer, CompressedModel
from core.geometry import ConvGeometry
from core.integer import quantize_model

# -- UART ---------------------------------------------------------------------------------------


def test_uart_round_trip_and_framing_error():
    divisor = 5
    transmitter, receiver = UARTTransmitter(divisor), UARTReceiver(divisor)
    m = Module()
    m.submodules.transmitter = transmitter
    m.submodules.receiver = receiver
    line = m.submodules.receiver.rx
    select = Signal(init=0)                                 # 0: the transmitter drives rx
    forced = Signal(init=1)
    m.d.comb += line.eq(Mux(select, forced, transmitter.tx))
    sent = [0x00, 0xFF, 0xC0, 0x55, 0xA3, 0x01, 0x80]
    received, errors = [], []

    async def send(ctx):
        for byte in sent:
            ctx.set(transmitter.i.valid, 1)
            ctx.set(transmitter.i.payload, byte)
            await ctx.tick().until(transmitter.i.ready)
        ctx.set(transmitter.i.valid, 0)
        await ctx.tick().repeat(15 * divisor)
        # A byte with a low stop bit, a low line for a while, then a good byte.
        ctx.set(select, 1)
        for bit in [0] + [1, 0] * 4 + [0] * 12 + [1]:
            ctx.set(forced, bit)
            await ctx.tick().repeat(divisor)
        for bit in [0] + [(0x3C >> i) & 1 for i in range(8)] + [1, 1]:
            ctx.set(forced, bit)
            await ctx.tick().repeat(divisor)
        await ctx.tick().repeat(5 * divisor)

    async def take(ctx):
        ctx.set(receiver.o.ready, 1)
        async for _, _, valid, payload, error in ctx.tick().sample(
                receiver.o.valid, receiver.o.payload, receiver.framing_error):
            if valid:
                received.append(payload)
            if error:
                errors.append(len(received))

    simulator = Simulator(m)
    simulator.add_clock(1e-6)
    simulator.add_testbench(send)
    simulator.add_process(take)
    simulator.run()
    assert received == sent + [0x3C]
    assert errors == [len(sent)]


@pytest.mark.parametrize("divisor", [3, 2.0, "8"])
def test_uart_rejects_bad_divisors(divisor):
    with pytest.raises((TypeError, ValueError), match="divisor must be"):
        UARTReceiver(divisor)
    with pytest.raises((TypeError, ValueError), match="divisor must be"):
        UARTTransmitter(divisor)


# -- CRC and SLIP -------------------------------------------------------------------------------

def test_crc16_ccitt_false_check_value():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF
    assert crc16(b"6789", crc16(b"12345")) == 0x29B1


bodies = st.lists(st.sampled_from([0xC0, 0xDB, 0xDC, 0xDD, 0x00, 0xFF, 0x7F]) | st.integers(0, 255),
                  max_size=40).map(bytes)


@settings(max_examples=200, deadline=None)
@given(kind=st.integers(0, 255), seq=st.integers(0, 255), payload=bodies, garbage=bodies)
def test_frames_decode_to_what_was_encoded(kind, seq, payload, garbage):
    wire = encode_frame(kind, seq, payload)
    assert wire[0] == END and wire[-1] == END and END not in wire[1:-1]
    events = FrameDecoder().feed(wire)
    assert events == [Frame(kind, seq, payload)]
    # After any garbage (closed by END), the next frame decodes.
    decoder = FrameDecoder()
    events = decoder.feed(garbage) + decoder.feed(wire)
    assert events[-1] == Frame(kind, seq, payload)
    assert all(isinstance(event, FrameError) for event in events[:-1])
    # Byte by byte gives the same.
    decoder = FrameDecoder()
    assert [e for byte in wire for e in decoder.feed(bytes([byte]))] == [Frame(kind, seq, payload)]


def test_decoder_reports_bad_crc_and_bad_escape_and_resyncs():
    good = encode_frame(INFER | RESPONSE, 9, b"\xc0\xdb\x01")
    corrupt = bytearray(good)
    corrupt[3] ^= 0x01
    events = FrameDecoder().feed(bytes(corrupt) + bytes([END, 1, 2, ESC, 0x41, 7, END]) + good)
    assert [type(e) for e in events] == [FrameError, FrameError, Frame]
    assert events[0].reason == "bad_crc" and events[1].reason == "bad_escape"
    assert FrameDecoder().feed(slip_encode(b"\x01\x02\x03")) == [FrameError("bad_crc",
                                                                            b"\x01\x02\x03")]
    assert FrameDecoder().feed(bytes([END, END, END])) == []


def test_plan_fingerprint_is_the_documented_hash():
    a = random_model(1, [12, 6])
    plan = EnginePlan.from_model(a, n_pes=1)
    fields = {name: getattr(plan, name) for name in (
        "in_features", "out_features", "input_bits", "input_signed", "input_lanes",
        "beats_per_image", "logit_bits", "address_bits", "data_bits")}
    text = json.dumps({**fields, "protocol_version": 1}, sort_keys=True, separators=(",", ":"))
    expected = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    assert plan_fingerprint(plan) == expected
    assert plan_fingerprint(EnginePlan.from_model(a, n_pes=1)) == expected
    assert plan_fingerprint(EnginePlan.from_model(random_model(1, [13, 6]), n_pes=1)) != expected
    assert plan_fingerprint(EnginePlan.from_model(a, n_pes=1, input_lanes=2)) != expected


# -- the board ----------------------------------------------------------------------------------

def _setup(seed=1, features=(20, 8, 3), n_pes=2):
    model = random_model(seed, list(features), density=0.5)
    plan = EnginePlan.from_model(model, n_pes=n_pes)
    board = SimulatedBoard(plan)
    return model, plan, board


def _raw_exchange(board, frame, frames=1):
    """Send raw bytes; the events decoded until ``frames`` frames came (or a timeout)."""
    board.write(frame)
    decoder = FrameDecoder()
    events = []
    while sum(isinstance(e, Frame) for e in events) < frames:
        data = board.read(1)
        if not data:
            break
        events += decoder.feed(data)
    return events


def test_info_and_infer_through_the_simulated_board():
    model, plan, board = _setup()
    link = HostLink(board, plan)
    info = link.info()
    assert info.fingerprint == plan_fingerprint(plan)
    assert (info.version, info.clock_hz, info.max_write_words) == (1, board.clock_hz, 64)
    assert (info.beats_per_image, info.out_features) == (plan.beats_per_image,
                                                         plan.out_features)
    x = random_inputs(model, 3, seed=2)
    logits, cycles = link.infer_many(x)
    np.testing.assert_array_equal(logits, sim.run(model, x))
    assert all(c > 0 for c in cycles)
    repeated, repeated_cycles = link.infer(x[1], repeat=3)
    np.testing.assert_array_equal(repeated, sim.run(model, x[1:2])[0])
    assert repeated_cycles > cycles[1]
    assert (link.retransmissions, link.naks, link.stale_replies) == (0, 0, 0)


@pytest.mark.parametrize("features", [[12, 6], [10, 4]])
def test_reload_another_model_through_write(features):
    """[10, 4] has a 7-bit address: a word's data then starts at a byte, not after the address
    bits (a bridge that packed the fields bit after bit wrote shifted data)."""
    built_for = random_model(3, features, density=0.9)
    other = random_model(4, features, density=0.5)
    plan = EnginePlan.from_model(built_for, n_pes=1)
    if features == [10, 4]:
        assert plan.address_bits % 8 != 0
    board = SimulatedBoard(plan, max_write_words=32)
    link = HostLink(board, plan)
    x = random_inputs(built_for, 1, seed=5)
    before, _ = link.infer(x[0])
    np.testing.assert_array_equal(before, sim.run(built_for, x)[0])
    words = plan.write_image(other)
    assert len(words) > 32                                  # several WRITEs
    assert link.reload(other) == len(words)
    after, _ = link.infer(x[0])
    np.testing.assert_array_equal(after, sim.run(other, x)[0])
    assert link.retransmissions == 0


def test_reload_an_lq_nets_model_through_write():
    """Per-row codebooks (A9) and thresholds and levels (A10) are words of the write port like
    the others: a reload through the UART bridge runs the new model."""
    built_for = random_model(3, [6, 4, 2], density=0.9, index_bits=2, per_row=True,
                             code_bits=2)
    other = random_model(4, [6, 4, 2], density=0.5, index_bits=2, per_row=True, code_bits=2,
                         bias_bits=8)
    plan = EnginePlan.from_model(built_for, n_pes=1)
    board = SimulatedBoard(plan)
    link = HostLink(board, plan)
    x = random_inputs(built_for, 2, seed=5)
    before, _ = link.infer_many(x)
    np.testing.assert_array_equal(before, sim.run(built_for, x))
    assert link.reload(other) == len(plan.write_image(other))
    after, _ = link.infer_many(x)
    np.testing.assert_array_equal(after, sim.run(other, x))
    assert not np.array_equal(before, after)


@pytest.mark.slow
def test_a_convolutional_net_infers_and_reloads_through_the_simulated_board():
    """Issue 25's ``accel.run --port sim``: a convolution (padding, max pooling) and a Linear
    layer behind the UART bridge: the logits equal ``sim``'s, and a reload of another model of
    the same shapes (its weights, tap masks and channel masks written through the link) runs it."""
    from test_accel_conv_engine import _conv_net

    geometry = ConvGeometry(2, 6, 5, 3, 3, stride=1, padding=1, pool="max")
    built_for, x = _conv_net(geometry, seed=1)
    rng = np.random.default_rng(2)                      # half the weights, other biases
    other = quantize_model(CompressedModel([
        CompressedLayer(codebook=layer.codebook, index=np.where(
            rng.random(layer.index.shape) < 0.5, layer.index, 0).astype(np.uint8),
            bias=rng.normal(0, 0.1, layer.out_features), relu=layer.relu,
            index_bits=layer.index_bits, geometry=layer.geometry)
        for layer in built_for.layers]), rng.random((8, built_for.in_features)))
    plan = EnginePlan.from_model(built_for, n_pes=1)
    link = HostLink(SimulatedBoard(plan), plan)
    before, cycles = link.infer_many(x[:2])
    np.testing.assert_array_equal(before, sim.run(built_for, x[:2]))
    assert all(c > 0 for c in cycles)
    assert link.reload(other) == len(plan.write_image(other))
    after, _ = link.infer_many(x[:2])
    np.testing.assert_array_equal(after, sim.run(other, x[:2]))
    assert not np.array_equal(before, after)
    assert link.retransmissions == 0


def _flip_once(target, mask=0x01):
    """An rx/tx filter flipping bits of byte number ``target`` (never making END or ESC)."""
    def flip(index, byte):
        if index == target and byte not in (END, ESC) and byte ^ mask not in (END, ESC):
            return byte ^ mask
        return byte
    return flip


def test_bad_checksum_is_naked_and_resent():
    model, plan, board = _setup()
    link = HostLink(board, plan)
    x = random_inputs(model, 1, seed=6)
    board.rx_filter = _flip_once(1 + 8)                     # inside the first INFER's payload
    logits, _ = link.infer(x[0])
    np.testing.assert_array_equal(logits, sim.run(model, x)[0])
    assert link.naks == 1 and link.retransmissions == 1


def test_framing_error_mid_frame_is_naked_and_nothing_is_lost_or_duplicated():
    model, plan, board = _setup()
    link = HostLink(board, plan)
    x = random_inputs(model, 3, seed=7)
    state = {"armed": True}

    def break_a_byte(index, byte):
        if state["armed"] and index == 1 + 6:               # inside the first INFER
            state["armed"] = False
            board.inject_framing_error(byte)
            return None
        return byte

    board.rx_filter = break_a_byte
    logits, _ = link.infer_many(x)
    np.testing.assert_array_equal(logits, sim.run(model, x))
    assert link.naks == 1 and link.retransmissions == 1


def test_garbage_and_a_truncated_frame_before_a_good_frame():
    model, plan, board = _setup()
    x = random_inputs(model, 1, seed=8)
    fmt = LinkFormat.from_plan(plan)
    beats = plan.encode_inputs(x)
    payload = (1).to_bytes(2, "little") + b"".join(b.to_bytes(fmt.beat_bytes, "little")
                                                   for b in beats)
    good = encode_frame(INFER, 5, payload)
    # Garbage, then half a frame, then the good frame: the truncated one ends at the good
    # frame's leading END and is refused; the good one is executed once.
    board.inject(bytes([0x13, 0x37, 0xDD]) + good[:len(good) // 2])
    events = _raw_exchange(board, good, frames=2)
    answers = [e for e in events if isinstance(e, Frame) and e.kind == INFER | RESPONSE]
    naks = [e for e in events if isinstance(e, Frame) and e.kind == NAK]
    assert len(answers) == 1 and answers[0].seq == 5
    assert all(e.payload[0] == BAD_CRC for e in naks) and len(naks) >= 1
    logits = [plan.decode_logit(int.from_bytes(answers[0].payload[k * 3:k * 3 + 3], "little"))
              for k in range(plan.out_features)]
    np.testing.assert_array_equal(logits, sim.run(model, x)[0])
    # And the host library gets on with it too.
    link = HostLink(board, plan)
    board.inject(b"\x00\x01\x02")
    again, _ = link.infer(x[0])
    np.testing.assert_array_equal(again, sim.run(model, x)[0])


def test_corrupt_and_lost_replies_are_retransmitted():
    model, plan, board = _setup()
    link = HostLink(board, plan)
    x = random_inputs(model, 2, seed=9)
    board.tx_filter = _flip_once(3)                         # the first reply's payload
    logits, _ = link.infer(x[0])
    np.testing.assert_array_equal(logits, sim.run(model, x[:1])[0])
    assert link.corrupt_replies == 1 and link.retransmissions == 1
    # Lose the whole next reply: timeout, retransmission, the answer to the same seq.
    first_lost = board._received

    def drop_one_reply(index, byte):
        return None if first_lost <= index < first_lost + 5 else byte

    board.tx_filter = drop_one_reply
    logits, _ = link.infer(x[1])
    np.testing.assert_array_equal(logits, sim.run(model, x[1:2])[0])
    assert link.timeouts + link.corrupt_replies >= 2 and link.retransmissions == 2


def test_errors_are_naked_with_their_codes():
    model = random_model(1, [20, 8, 3], density=0.5)
    plan = EnginePlan.from_model(model, n_pes=2)
    board = SimulatedBoard(plan, max_write_words=4)
    fmt = LinkFormat.from_plan(plan)
    image = b"\x00" * (fmt.beats_per_image * fmt.beat_bytes)
    cases = [
        (encode_frame(0x09, 21, b""), 21, BAD_KIND),
        (encode_frame(INFO, 22, b"\x00"), 22, BAD_LENGTH),
        (encode_frame(INFER, 23, b"\x01\x00" + image[:-1]), 23, BAD_LENGTH),
        (encode_frame(INFER, 24, b"\x00\x00" + image), 24, BAD_REPEAT),
        (encode_frame(WRITE, 25, b""), 25, BAD_LENGTH),
        (encode_frame(WRITE, 26, b"\x00" * (fmt.word_bytes + 1)), 26, BAD_LENGTH),
        (encode_frame(WRITE, 27, b"\x00" * (5 * fmt.word_bytes)), 27, BAD_LENGTH),
        (bytes([END, 28, 28, ESC, 0x11, 1, 2, END]), 28, BAD_ESCAPE),
        (bytes([END, INFO, 29, 0x12]) + bytes([END]), 29, BAD_CRC),
    ]
    for frame, seq, code in cases:
        events = _raw_exchange(board, frame)
        assert events == [Frame(NAK, seq, bytes([code]))], (seq, events)
    # A framing error inside a frame.
    board.write(encode_frame(INFO, 30, b"")[:3])
    board.inject_framing_error()
    board.write(encode_frame(INFO, 30, b"")[3:])
    assert _raw_exchange(board, b"") == [Frame(NAK, 30, bytes([FRAMING]))]
    # Nothing was executed: the board still answers INFO normally.
    events = _raw_exchange(board, encode_frame(INFO, 31, b""))
    assert [(e.kind, e.seq) for e in events] == [(INFO | RESPONSE, 31)]


def test_link_errors_after_retries():
    model, plan, board = _setup()
    board.tx_filter = lambda index, byte: None              # the board is never heard
    board.timeout_cycles = 400
    link = HostLink(board, plan, retries=2)
    with pytest.raises(LinkError, match="INFO .*2 retransmissions.*timeout"):
        link.info()
    assert link.retransmissions == 2 and link.timeouts == 3


def test_bad_parameters():
    model = random_model(1, [12, 6])
    plan = EnginePlan.from_model(model, n_pes=1)
    with pytest.raises(ValueError, match="round to at least 8, not 5"):
        HostBridge(plan, clock_hz=5_000_000, baud=1_000_000)
    with pytest.raises(ValueError, match="divisor 9 gives 1044444 baud, 4.4% off"):
        LinkedEngine(plan, clock_hz=9_400_000, baud=1_000_000)
    with pytest.raises(ValueError, match="baud must be a positive int"):
        HostBridge(plan, clock_hz=25_000_000, baud=0)
    with pytest.raises(ValueError, match="max_write_words must be an int 1..65535, not 0"):
        HostBridge(plan, clock_hz=25_000_000, baud=115_200, max_write_words=0)
    with pytest.raises(TypeError, match="plan must be an EnginePlan"):
        HostBridge(model, clock_hz=25_000_000, baud=115_200)
    assert baud_divisor(25_000_000, 115_200) == 217           # 0.03 % off
    transport = io.BytesIO()
    with pytest.raises(ValueError, match="retries must be"):
        HostLink(transport, plan, retries=-1)
    with pytest.raises(ValueError, match="timeout_s must be"):
        HostLink(transport, plan, timeout_s=0)
    with pytest.raises(TypeError, match="transport must have"):
        HostLink(object(), plan)
    with pytest.raises(ValueError, match="repeat must be an int 1..65535"):
        HostLink(transport, plan).infer(np.zeros(12, dtype=np.int64), repeat=0)
    assert transport.getvalue() == b""                      # nothing was sent


# -- two clock domains: the UART on the crystal, the engine on any clock -------------------------

UART_HZ = 8_000_000


@pytest.mark.parametrize("sync_hz, reload", [(13_000_000, False),        # faster than uart
                                              (5_000_000, True)])          # slower
def test_two_domain_board_measures_its_clock_and_round_trips(sync_hz, reload):
    built_for = random_model(3, [12, 6], density=0.9)
    other = random_model(4, [12, 6], density=0.5)
    plan = EnginePlan.from_model(built_for, n_pes=1)
    board = SimulatedBoard(plan, clock_hz=sync_hz, uart_clock_hz=UART_HZ,
                           meter_window_cycles=200, max_write_words=64)
    bridge = board.dut.bridge
    assert (bridge.two_domain, bridge.divisor, bridge.meter_window_cycles,
            bridge.meter_scale) == (True, 8, 200, 40_000)
    link = HostLink(board, plan)
    info = link.info()
    assert abs(info.clock_hz - sync_hz) <= bridge.meter_tolerance_hz(sync_hz) == 80_000
    assert (info.fingerprint, info.max_write_words) == (plan_fingerprint(plan), 64)
    x = random_inputs(built_for, 2, seed=5)
    logits, cycles = link.infer_many(x)
    np.testing.assert_array_equal(logits, sim.run(built_for, x))
    assert all(c > 0 for c in cycles)
    if reload:                                  # the whole image of another model
        model, words = other, plan.write_image(other)
        assert len(words) > 64                  # two WRITEs
    else:                                       # a WRITE of the model's own first words
        model, words = built_for, plan.write_image(built_for)[:20]
    assert link.write(words) == len(words)
    after, _ = link.infer(x[0], repeat=2)
    np.testing.assert_array_equal(after, sim.run(model, x[:1])[0])
    assert (link.retransmissions, link.naks, link.stale_replies) == (0, 0, 0)


def test_two_domain_info_is_zero_before_the_first_window_and_framing_errors_nak():
    model = random_model(1, [12, 6], density=0.5)
    plan = EnginePlan.from_model(model, n_pes=1)
    board = SimulatedBoard(plan, clock_hz=11_000_000, uart_clock_hz=UART_HZ)
    bridge = board.dut.bridge
    assert (bridge.meter_window_cycles, bridge.meter_scale) == (UART_HZ // 100, 100)
    assert bridge.meter_tolerance_hz(125_000_000) == 200
    assert bridge.info_payload() == bridge.info_payload(0)
    # The default window is 10 ms: far longer than this INFO takes.
    events = _raw_exchange(board, encode_frame(INFO, 7, b""))
    assert events == [Frame(INFO | RESPONSE, 7, bridge.info_payload(0))]
    # A framing error inside a frame is NAKed, and nothing is executed.
    board.write(encode_frame(INFO, 8, b"")[:3])
    board.inject_framing_error()
    board.write(encode_frame(INFO, 8, b"")[3:])
    assert _raw_exchange(board, b"") == [Frame(NAK, 8, bytes([FRAMING]))]
    events = _raw_exchange(board, bytes([END, INFO, 9, 0x12, END]))
    assert events == [Frame(NAK, 9, bytes([BAD_CRC]))]
    events = _raw_exchange(board, encode_frame(INFO, 10, b""))
    assert [(e.kind, e.seq) for e in events] == [(INFO | RESPONSE, 10)]


def test_two_domain_netlist_does_not_depend_on_the_engine_clock():
    from amaranth.back import rtlil
    plan = EnginePlan.from_model(random_model(1, [6, 3]), n_pes=1)
    texts = {rtlil.convert(LinkedEngine(plan, clock_hz=clock_hz, baud=1_000_000,
                                        uart_clock_hz=25_000_000))
             for clock_hz in (None, 100_000_000, 125_000_000)}
    assert len(texts) == 1
    assert "uart" in texts.pop()


def test_two_domain_bad_parameters():
    plan = EnginePlan.from_model(random_model(1, [12, 6]), n_pes=1)
    with pytest.raises(ValueError, match="clock_hz is required when uart_clock_hz is not given"):
        HostBridge(plan, baud=115_200)
    with pytest.raises(ValueError, match="clock_hz is required"):
        LinkedEngine(plan, baud=115_200)
    with pytest.raises(ValueError, match="round to at least 8, not 5"):
        HostBridge(plan, baud=1_000_000, uart_clock_hz=5_000_000)
    with pytest.raises(ValueError, match="divisor 9 gives 1044444 baud, 4.4% off"):
        LinkedEngine(plan, baud=1_000_000, uart_clock_hz=9_400_000)
    with pytest.raises(ValueError, match="uart_clock_hz must be a positive int"):
        HostBridge(plan, baud=115_200, uart_clock_hz=0)
    with pytest.raises(ValueError, match="clock_hz must be a positive int"):
        HostBridge(plan, clock_hz=-1, baud=115_200, uart_clock_hz=25_000_000)
    with pytest.raises(ValueError, match="meter_window_cycles needs uart_clock_hz"):
        HostBridge(plan, clock_hz=25_000_000, baud=115_200, meter_window_cycles=100)
    with pytest.raises(ValueError, match="meter_window_cycles must be an int 16 .. uart_clock_hz"):
        HostBridge(plan, baud=115_200, uart_clock_hz=25_000_000, meter_window_cycles=8)
    single = HostBridge(plan, clock_hz=25_000_000, baud=115_200)
    single._MustUse__used = True
    assert (single.two_domain, single.meter_window_cycles, single.uart_clock_hz) == (False,
                                                                                     None, None)
    with pytest.raises(ValueError, match="meter_tolerance_hz is for two-domain mode"):
        single.meter_tolerance_hz(1)
    # 12 MHz (iCEBreaker) and 25 MHz (ULX3S) crystals: 10 ms windows, exact scale 100.
    for uart_hz in (12_000_000, 25_000_000):
        bridge = HostBridge(plan, baud=1_000_000, uart_clock_hz=uart_hz)
        assert (bridge.meter_window_cycles * 100, bridge.meter_scale) == (uart_hz, 100)
        assert bridge.clock_hz is None and bridge.info_payload()[5:9] == bytes(4)
        bridge._MustUse__used = True
    # A crystal not a multiple of 100 Hz: the nearest window, the rounding in the tolerance.
    bridge = HostBridge(plan, baud=115_200, uart_clock_hz=14_318_181)
    assert (bridge.meter_window_cycles, bridge.meter_scale) == (143_182, 100)
    assert 200 < bridge.meter_tolerance_hz(125_000_000) < 200 + 200
    bridge._MustUse__used = True
