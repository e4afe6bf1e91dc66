"""The host side of the UART link to an engine on a board (``docs/host-link.md``).

A stop-and-wait client (:class:`HostLink`) over any transport with ``write(bytes)``,
``read(n) -> bytes`` (fewer bytes, ``b""`` on timeout) and ``close()``: a serial port
(:func:`open_serial`, pyserial) or the simulated board of :mod:`accel.verification.link_sim`.
The wire protocol (frames, CRC, the plan's wire format) is :mod:`accel.protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel.protocol import (END, INFER, INFO, NAK, NAK_NAMES, PROTOCOL_VERSION, RESPONSE, WRITE,
                             FrameDecoder, FrameError, LinkFormat, encode_frame, plan_fingerprint,
                             KIND_NAMES)

__all__ = ["BoardInfo", "HostLink", "LinkError", "open_serial"]


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
        :class:`accel.verification.link_sim.SimulatedBoard`.
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
        raise LinkError(f"{KIND_NAMES[kind]} (seq {seq}) failed after {self.retries} "
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
