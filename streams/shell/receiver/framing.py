"""Syslog over a byte stream (TCP, TLS): RFC 6587 framing, detected per connection.

The first byte of a connection decides: a digit 1-9 means octet counting
(``MSG-LEN SP SYSLOG-MSG``, RFC 6587 §3.4.1, the only framing RFC 5425 allows over TLS);
anything else means non-transparent framing (RFC 6587 §3.4.2: messages end with LF; a
trailing CR is dropped too, and so is a NUL used as the delimiter by some senders).

:class:`StreamFramer` never raises: a broken octet count makes :meth:`StreamFramer.feed`
report the error, and the connection is then closed by its owner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_COUNT_DIGITS = 9  # 999,999,999 bytes: anything longer is not a length


@dataclass(slots=True)
class FeedResult:
    """What one chunk of bytes gave."""

    messages: list[bytes] = field(default_factory=list)
    truncated: int = 0  # messages longer than the limit (cut to it)
    blank: int = 0  # LF framing: empty lines (dropped)
    error: str | None = None  # the octet count was broken: close the connection


class StreamFramer:
    """Splits a connection's bytes into messages.

    ``max_message``: longer messages are cut to this length (and counted);
    ``max_frame``: an octet count above this is absurd and an error.
    """

    def __init__(self, max_message: int, max_frame: int | None = None) -> None:
        self.max_message = max_message
        self.max_frame = max_frame if max_frame is not None else max(16 * max_message, 1 << 20)
        self.mode: str | None = None  # "octet" or "lf", from the first byte
        self._buf = bytearray()
        self._need: int | None = None  # octet counting: bytes of the current message left
        self._msg = bytearray()  # octet counting: the current message (up to max_message)
        self._discarding = False  # LF framing: skipping the rest of an over-long line
        self.failed = False

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._msg)

    def feed(self, data: bytes) -> FeedResult:
        out = FeedResult()
        if self.failed or not data:
            return out
        if self.mode is None:
            self.mode = "octet" if 0x31 <= data[0] <= 0x39 else "lf"
        if self.mode == "octet":
            self._feed_octet(data, out)
        else:
            self._feed_lf(data, out)
        return out

    def finish(self) -> FeedResult:
        """The connection ended: an unterminated LF-framed message still counts."""
        out = FeedResult()
        if self.mode == "lf" and self._buf and not self._discarding:
            msg = bytes(self._buf).rstrip(b"\r\x00")
            if msg:
                out.messages.append(msg)
        elif self.mode == "octet" and (self._need is not None or self._buf):
            out.error = "connection closed inside an octet-counted message"
        self._buf.clear()
        return out

    # -- octet counting ----------------------------------------------------------------

    def _feed_octet(self, data: bytes, out: FeedResult) -> None:
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while pos < n:
            if self._need is None:
                sp = buf.find(b" ", pos, pos + MAX_COUNT_DIGITS + 1)
                if sp < 0:
                    if n - pos > MAX_COUNT_DIGITS:
                        self._fail(out, "octet count too long or missing its space")
                        return
                    for b in buf[pos:]:  # what is there must at least be digits
                        if not 0x30 <= b <= 0x39:
                            self._fail(out, f"non-digit {bytes([b])!r} in an octet count")
                            return
                    break
                digits = bytes(buf[pos:sp])
                if not digits or not digits.isdigit() or digits[0] == 0x30:
                    self._fail(out, f"invalid octet count {digits[:20]!r}")
                    return
                length = int(digits)
                if length > self.max_frame:
                    self._fail(out, f"absurd octet count {length} (limit {self.max_frame})")
                    return
                self._need = length
                pos = sp + 1
                continue
            take = min(self._need, n - pos)
            room = self.max_message - len(self._msg)
            if room > 0:
                self._msg += buf[pos : pos + min(take, room)]
            pos += take
            self._need -= take
            if self._need == 0:
                if len(self._msg) == self.max_message and take > room:
                    out.truncated += 1
                out.messages.append(bytes(self._msg))
                self._msg.clear()
                self._need = None
        del buf[:pos]

    # -- LF (non-transparent) ------------------------------------------------------------

    def _feed_lf(self, data: bytes, out: FeedResult) -> None:
        buf = self._buf
        start = len(buf)
        buf += data
        pos = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                msg = bytes(buf[pos:nl]).rstrip(b"\r\x00")
                if len(msg) > self.max_message:
                    msg = msg[: self.max_message]
                    out.truncated += 1
                if msg:
                    out.messages.append(msg)
                else:
                    out.blank += 1
            pos = nl + 1
            start = pos
        if pos:
            del buf[:pos]
        if len(buf) > self.max_message:
            # No LF within the limit: publish the first max_message bytes, skip to the LF.
            if not self._discarding:
                out.messages.append(bytes(buf[: self.max_message]))
                out.truncated += 1
                self._discarding = True
            buf.clear()

    def _fail(self, out: FeedResult, reason: str) -> None:
        self.failed = True
        out.error = reason
        self._buf.clear()
        self._msg.clear()
