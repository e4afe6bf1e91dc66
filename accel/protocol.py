"""The UART link's wire protocol (``docs/host-link.md``), shared by both ends: the host
(:mod:`accel.host`) and the board's bridge (:mod:`accel.gateware.link`).

Pure Python: SLIP framing with a CRC-16 (:func:`encode_frame`, :class:`FrameDecoder`), the frame
kinds and NAK codes, and the plan's wire format (:class:`LinkFormat`, :func:`plan_fingerprint`).

>>> encode_frame(INFO, 1, b"").hex()
'c001011f3ec0'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

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
    "KIND_NAMES",
    "NAK",
    "NAK_NAMES",
    "PROTOCOL_VERSION",
    "RESPONSE",
    "WRITE",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "LinkFormat",
    "crc16",
    "encode_frame",
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

KIND_NAMES = {INFO: "INFO", INFER: "INFER", WRITE: "WRITE"}


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
