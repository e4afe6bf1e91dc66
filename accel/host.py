"""The host side of the UART link to an engine on a board (``docs/host-link.md``).

Pure Python and numpy: SLIP framing with a CRC-16 (:func:`encode_frame`, :class:`FrameDecoder`),
the plan's wire format (:class:`LinkFormat`, :func:`plan_fingerprint`) and a stop-and-wait
client (:class:`HostLink`) over any transport with ``write(bytes)``, ``read(n) -> bytes`` (fewer
bytes, ``b""`` on timeout) and ``close()``: a serial port (:func:`open_serial`, pyserial) or the
simulated board of :mod:`accel.link_sim`.

>>> encode_frame(INFO, 1, b"").hex()
'c001011f3ec0'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BAD_CRC",
    "BAD_ESCAPE",
    "BAD_KIND",
    "BAD_LENGTH",
    "BAD_REPEAT",
    "DEFAULT_MAX_WRITE_WORDS",
    "END",
    "ESC",
    "ESC_END",
    "ESC_ESC",
    "FRAMING",
    "INFER",
    "INFO",
    "NAK",
    "NAK_NAMES",
    "PROTOCOL_VERSION",
    "RESPONSE",
    "WRITE",
    "BoardInfo",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "HostLink",
    "LinkError",
    "LinkFormat",
    "crc16",
    "encode_frame",
    "open_serial",
    "plan_fingerprint",
    "slip_encode",
]

#: Version of ``docs/host-link.md`` implemented here (reported by INFO, part of the fingerprint).
PROTOCOL_VERSION = 1

# SLIP (RFC 1055).
END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

# Request kinds; a response's kind is the request's | RESPONSE.
INFO, INFER, WRITE = 0x01, 0x02, 0x03
RESPONSE = 0x80
NAK = 0x7F

# NAK codes.
BAD_CRC, FRAMING, BAD_LENGTH, BAD_KIND, BAD_ESCAPE, BAD_REPEAT = 1, 2, 3, 4, 5, 6
NAK_NAMES = {BAD_CRC: "BAD_CRC", FRAMING: "FRAMING", BAD_LENGTH: "BAD_LENGTH",
             BAD_KIND: "BAD_KIND", BAD_ESCAPE: "BAD_ESCAPE", BAD_REPEAT: "BAD_REPEAT"}

#: Words one WRITE carries at most, unless the board was built otherwise (INFO tells).
DEFAULT_MAX_WRITE_WORDS = 64

#: Bytes of the INFO response payload and of the INFER response's cycle count.
INFO_BYTES = 15
CYCLES_BYTES = 6

_KIND_NAMES = {INFO: "INFO", INFER: "INFER", WRITE: "WRITE"}


# -- checksum and framing -----------------------------------------------------------------------

def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (poly 0x1021, init 0xFFFF, unreflected, no final xor).

    ``crc`` continues an earlier computation. ``crc16(b"123456789") == 0x29B1``.
    """
    for byte in bytes(data):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def slip_encode(body) -> bytes:
    """``END``, ``body`` with ``END``/``ESC`` escaped, ``END``."""
    out = bytearray([END])
    for byte in bytes(body):
        if byte == END:
            out += bytes([ESC, ESC_END])
        elif byte == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(byte)
    out.append(END)
    return bytes(out)


def encode_frame(kind: int, seq: int, payload=b"") -> bytes:
    """A whole frame on the wire: SLIP of ``kind, seq, payload, crc16`` (CRC low byte first)."""
    for name, value in [("kind", kind), ("seq", seq)]:
        if not isinstance(value, int) or not 0 <= value <= 255:
            raise ValueError(f"{name} must be an int 0..255, not {value!r}")
    body = bytes([kind, seq]) + bytes(payload)
    return slip_encode(body + crc16(body).to_bytes(2, "little"))


@dataclass(frozen=True)
class Frame:
    """A decoded frame whose CRC matched."""

    kind: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class FrameError:
    """A frame that could not be decoded.

    Attributes
    ----------
    reason : str
        ``"bad_crc"`` (including bodies shorter than 4 bytes) or ``"bad_escape"``.
    body : bytes
        What was received of the (unescaped) body.
    """

    reason: str
    body: bytes


class FrameDecoder:
    """Incremental SLIP + CRC decoder: :meth:`feed` bytes, get frames and errors.

    Bytes before the first ``END`` count as a frame (like the board's receiver), so garbage
    gives one :class:`FrameError` at the next ``END`` and the frame after it decodes. After a
    bad escape the rest, up to the next ``END``, is discarded (``ESC END`` closes the frame).
    """

    def __init__(self):
        self._body = bytearray()
        self._escaped = False
        self._discarding = False

    @property
    def body(self) -> bytes:
        """The unescaped bytes of the frame being received."""
        return bytes(self._body)

    def feed(self, data) -> list:
        """Decode ``data``; a list of :class:`Frame` and :class:`FrameError`, in order."""
        events = []
        for byte in bytes(data):
            if byte == END:
                if self._escaped:
                    events.append(FrameError("bad_escape", bytes(self._body)))
                elif not self._discarding and self._body:
                    events.append(self._close(bytes(self._body)))
                self._body.clear()
                self._escaped = self._discarding = False
            elif self._discarding:
                continue
            elif self._escaped:
                self._escaped = False
                if byte in (ESC_END, ESC_ESC):
                    self._body.append(END if byte == ESC_END else ESC)
                else:
                    events.append(FrameError("bad_escape", bytes(self._body)))
                    self._body.clear()
                    self._discarding = True
            elif byte == ESC:
                self._escaped = True
            else:
                self._body.append(byte)
        return events

    @staticmethod
    def _close(body: bytes):
        if len(body) < 4 or crc16(body[:-2]) != int.from_bytes(body[-2:], "little"):
            return FrameError("bad_crc", body)
        return Frame(body[0], body[1], body[2:-2])


# -- the plan's wire format ---------------------------------------------------------------------

def _bytes_for(bits: int) -> int:
    return max(1, -(-int(bits) // 8))


@dataclass(frozen=True)
class LinkFormat:
    """Field widths in bytes for one plan (``docs/host-link.md``, "Requests and responses").

    Attributes
    ----------
    beat_bytes, logit_bytes, address_bytes, data_bytes : int
        ``B``, ``L``, ``A``, ``D``.
    beats_per_image, out_features : int
    """

    beat_bytes: int
    logit_bytes: int
    address_bytes: int
    data_bytes: int
    beats_per_image: int
    out_features: int

    @classmethod
    def from_plan(cls, plan) -> "LinkFormat":
        return cls(beat_bytes=_bytes_for(plan.input_lanes * plan.input_bits),
                   logit_bytes=_bytes_for(plan.logit_bits),
                   address_bytes=_bytes_for(plan.address_bits),
                   data_bytes=_bytes_for(plan.data_bits),
                   beats_per_image=int(plan.beats_per_image),
                   out_features=int(plan.out_features))

    @property
    def word_bytes(self) -> int:
        """Bytes of one WRITE word (address then data)."""
        return self.address_bytes + self.data_bytes

    @property
    def infer_payload_bytes(self) -> int:
        """Bytes of an INFER request's payload (repeat and one image)."""
        return 2 + self.beats_per_image * self.beat_bytes

    @property
    def infer_response_bytes(self) -> int:
        """Bytes of an INFER response's payload (logits and cycles)."""
        return self.out_features * self.logit_bytes + CYCLES_BYTES

    def response_bytes(self, kind: int) -> int | None:
        """Payload bytes of a response of ``kind`` (None: unknown kind)."""
        return {INFO | RESPONSE: INFO_BYTES, INFER | RESPONSE: self.infer_response_bytes,
                WRITE | RESPONSE: 2, NAK: 1}.get(kind)


def plan_fingerprint(plan) -> int:
    """32-bit fingerprint of everything the wire format and engine ports depend on.

    The first 4 bytes (little-endian) of the SHA-256 of the canonical JSON of the plan's
    ``in_features, out_features, input_bits, input_signed, input_lanes, beats_per_image,
    logit_bits, address_bits, data_bits`` and ``protocol_version``.
    """
    fields = {name: getattr(plan, name) for name in (
        "in_features", "out_features", "input_bits", "input_signed", "input_lanes",
        "beats_per_image", "logit_bits", "address_bits", "data_bits")}
    fields = {k: (bool(v) if k == "input_signed" else int(v)) for k, v in fields.items()}
    fields["protocol_version"] = PROTOCOL_VERSION
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


# -- the client ---------------------------------------------------------------------------------

class LinkError(RuntimeError):
    """The board did not answer correctly within the retries, or answered something invalid."""


@dataclass(frozen=True)
class BoardInfo:
    """The INFO response."""

    version: int
    fingerprint: int
    clock_hz: int
    max_write_words: int
    beats_per_image: int
    out_features: int

    @classmethod
    def from_payload(cls, payload: bytes) -> "BoardInfo":
        def field(start, size):
            return int.from_bytes(payload[start:start + size], "little")
        return cls(version=field(0, 1), fingerprint=field(1, 4), clock_hz=field(5, 4),
                   max_write_words=field(9, 2), beats_per_image=field(11, 2),
                   out_features=field(13, 2))


class HostLink:
    """Stop-and-wait client of a board running ``LinkedEngine(plan)``.

    Parameters
    ----------
    transport
        ``write(bytes)``, ``read(n) -> bytes`` (fewer bytes, ``b""`` once nothing arrives
        within its timeout), ``close()``: :func:`open_serial` or
        :class:`accel.link_sim.SimulatedBoard`.
    plan : EnginePlan
        The plan the board was built with.
    timeout_s : float
        Read timeout, for transports that take one (:func:`open_serial`); kept as an attribute.
    retries : int
        Retransmissions of one request before :class:`LinkError`.

    Attributes
    ----------
    retransmissions : int
        Frames sent again (after a NAK, a timeout or a corrupt reply).
    naks : int
        NAKs received for the outstanding request.
    stale_replies : int
        Correct frames ignored because their kind or seq was not the outstanding request's.
    corrupt_replies : int
        Frames received with a bad CRC, a bad escape or a wrong payload length.
    timeouts : int
        Waits that ended with no answer.
    """

    def __init__(self, transport, plan, *, timeout_s: float = 1.0, retries: int = 8):
        for name in ("write", "read"):
            if not callable(getattr(transport, name, None)):
                raise TypeError(f"transport must have write() and read(), not {transport!r}")
        if not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise ValueError(f"timeout_s must be a positive number, not {timeout_s!r}")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, not {retries!r}")
        self.transport = transport
        self.plan = plan
        self.format = LinkFormat.from_plan(plan)
        self.timeout_s = timeout_s
        self.retries = retries
        self.retransmissions = self.naks = self.stale_replies = 0
        self.corrupt_replies = self.timeouts = 0
        self._seq = 1
        self._decoder = FrameDecoder()
        self._flushed = False
        self._max_write_words: int | None = None

    # -- requests ---------------------------------------------------------------------------

    def info(self, *, check: bool = True) -> BoardInfo:
        """Ask the board what it is.

        With ``check``, raise :class:`LinkError` unless the protocol version and the plan
        fingerprint are this host's.
        """
        info = BoardInfo.from_payload(self._request(INFO, b""))
        if check:
            if info.version != PROTOCOL_VERSION:
                raise LinkError(f"the board speaks protocol version {info.version}, this host "
                                f"{PROTOCOL_VERSION}")
            if info.fingerprint != plan_fingerprint(self.plan):
                raise LinkError(f"the board's plan fingerprint is {info.fingerprint:#010x}, the "
                                f"host's plan has {plan_fingerprint(self.plan):#010x}: the "
                                f"board was built for a different plan")
        self._max_write_words = info.max_write_words
        return info

    def infer(self, x_row, repeat: int = 1) -> tuple[np.ndarray, int]:
        """Run one image ``repeat`` times; the last run's logits (int64) and the engine clocks.

        ``x_row`` is one integer input, shape ``(in_features,)``.
        """
        if not isinstance(repeat, (int, np.integer)) or not 1 <= repeat <= 0xFFFF:
            raise ValueError(f"repeat must be an int 1..65535, not {repeat!r}")
        x = np.asarray(x_row)
        if x.ndim != 1:
            raise ValueError(f"x_row must be one image, shape ({self.plan.in_features},), not "
                             f"{x.shape}")
        fmt = self.format
        beats = self.plan.encode_inputs(x[None, :])
        payload = int(repeat).to_bytes(2, "little") + b"".join(
            beat.to_bytes(fmt.beat_bytes, "little") for beat in beats)
        answer = self._request(INFER, payload)
        size = fmt.logit_bytes
        logits = np.array([
            self.plan.decode_logit(int.from_bytes(answer[k * size:(k + 1) * size], "little"))
            for k in range(fmt.out_features)], dtype=np.int64)
        cycles = int.from_bytes(answer[fmt.out_features * size:], "little")
        return logits, cycles

    def infer_many(self, x) -> tuple[np.ndarray, list[int]]:
        """:meth:`infer` every row of ``x`` ``(n, in_features)``: logits ``(n, out)``, cycles."""
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (n, {self.plan.in_features}), not {x.shape}")
        logits = np.zeros((len(x), self.plan.out_features), dtype=np.int64)
        cycles = []
        for k, row in enumerate(x):
            logits[k], c = self.infer(row)
            cycles.append(c)
        return logits, cycles

    def write(self, words) -> int:
        """Send ``(address, data)`` words in WRITEs of at most the board's ``max_write_words``.

        Returns the number of words written.
        """
        words = [(int(a), int(d)) for a, d in words]
        if self._max_write_words is None:
            self.info()
        fmt, chunk = self.format, max(1, self._max_write_words)
        for start in range(0, len(words), chunk):
            part = words[start:start + chunk]
            payload = b"".join(
                (a & ((1 << 8 * fmt.address_bytes) - 1)).to_bytes(fmt.address_bytes, "little")
                + (d & ((1 << 8 * fmt.data_bytes) - 1)).to_bytes(fmt.data_bytes, "little")
                for a, d in part)
            answer = self._request(WRITE, payload)
            if int.from_bytes(answer, "little") != len(part):
                raise LinkError(f"the board acknowledged {int.from_bytes(answer, 'little')} "
                                f"words of a WRITE of {len(part)}")
        return len(words)

    def reload(self, model) -> int:
        """Load another model of the plan's shapes (:meth:`EnginePlan.write_image`)."""
        return self.write(self.plan.write_image(model))

    def close(self):
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    # -- stop-and-wait ----------------------------------------------------------------------

    def _request(self, kind: int, payload: bytes) -> bytes:
        if not self._flushed:
            self.transport.write(bytes([END]))
            self._flushed = True
        seq = self._seq
        frame = encode_frame(kind, seq, payload)
        problem = "no answer"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retransmissions += 1
            self.transport.write(frame)
            answer, problem = self._await(kind, seq)
            if answer is not None:
                self._seq = self._seq % 255 + 1            # 1 .. 255, never 0
                return answer
        raise LinkError(f"{_KIND_NAMES[kind]} (seq {seq}) failed after {self.retries} "
                        f"retransmissions; last problem: {problem}")

    def _await(self, kind: int, seq: int) -> tuple[bytes | None, str]:
        """Read until the answer to ``(kind, seq)``, a reason to retransmit, or a timeout."""
        fmt = self.format
        expected = fmt.response_bytes(kind | RESPONSE)
        budget = 16 * (expected + 8) + 4096               # bytes of garbage tolerated
        while budget > 0:
            body = self._decoder.body
            size = fmt.response_bytes(body[0]) if body else None
            want = 1 if size is None else max(0, size + 4 - len(body)) + 1
            data = self.transport.read(want)
            if not data:
                self.timeouts += 1
                return None, "timeout"
            budget -= len(data)
            for event in self._decoder.feed(data):
                if isinstance(event, FrameError):
                    self.corrupt_replies += 1
                    return None, f"corrupt reply ({event.reason})"
                if event.kind == NAK and event.seq in (seq, 0) and len(event.payload) == 1:
                    self.naks += 1
                    code = event.payload[0]
                    return None, f"NAK {NAK_NAMES.get(code, code)}"
                if event.kind == kind | RESPONSE and event.seq == seq:
                    if len(event.payload) != expected:
                        self.corrupt_replies += 1
                        return None, (f"answer of {len(event.payload)} bytes, expected "
                                      f"{expected}")
                    return event.payload, ""
                self.stale_replies += 1
        return None, "too many bytes without an answer"


def open_serial(port: str, baud: int = 1_000_000, timeout_s: float = 1.0):
    """A serial port as a :class:`HostLink` transport (needs pyserial)."""
    try:
        import serial
    except ImportError as error:                    # pragma: no cover - depends on the install
        raise ImportError("open_serial needs pyserial: pip install pyserial==3.5") from error
    return serial.Serial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1,
                         timeout=timeout_s)
