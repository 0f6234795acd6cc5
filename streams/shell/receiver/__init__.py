"""``tunnelwatch receive``: syslog over UDP/TCP/TLS to Kafka's ``syslog.raw``, spooled to disk
when Kafka is away. One module per part:

- ``record.py``: the published record (raw value, device key, headers) and the device lookup;
- ``framing.py``: RFC 6587 octet counting / LF framing for stream transports;
- ``protection.py``: source allow-list and per-source token-bucket rate limit;
- ``spool.py``: the on-disk write-ahead log;
- ``kafka.py``: batched, idempotent, lz4-compressed publishing;
- ``pipeline.py``: memory queue → Kafka, spool when Kafka is away or slow, shutdown;
- ``metrics.py``: counters and the Prometheus ``/metrics`` endpoint;
- ``server.py``: the listeners and the :class:`Receiver` tying it together.
"""

from streams.shell.receiver.server import Receiver, ReceiverConfig, parse_hostport

__all__ = ["Receiver", "ReceiverConfig", "parse_hostport"]
