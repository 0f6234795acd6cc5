"""What the receiver lets in: source networks, a per-source rate, a maximum size."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable

from streams.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CACHE_MAX = 65536


def parse_networks(specs: Iterable[str]) -> list[IPNetwork]:
    """``--allow`` values (CIDR or single addresses) as networks; ConfigError when invalid."""
    nets: list[IPNetwork] = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"--allow {spec!r}: {exc}") from exc
    return nets


class AllowList:
    """Whether a source address may send; empty means everyone. Answers are cached."""

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self.networks = list(networks)
        self._cache: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            return self._cache[host]
        except KeyError:
            pass
        try:
            addr = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            ok = False
        else:
            mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
            ok = any(addr in net or (mapped is not None and mapped in net) for net in self.networks)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[host] = ok
        return ok


class RateLimiter:
    """A token bucket per source address: ``rate`` messages a second, bursts of ``burst``.

    ``rate`` None or 0 disables it. Buckets of sources idle long enough to be full again
    are forgotten when the table grows past ``max_sources``.
    """

    def __init__(
        self,
        rate: float | None,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = _CACHE_MAX,
    ) -> None:
        if rate is not None and rate < 0:
            raise ConfigError("--rate-limit must not be negative")
        self.rate = rate or 0.0
        self.burst = burst if burst is not None else max(self.rate, 1.0)
        self._clock = clock
        self._max = max_sources
        self._buckets: dict[str, list[float]] = {}  # host -> [tokens, last refill]

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, host: str) -> bool:
        if self.rate <= 0:
            return True
        now = self._clock()
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._prune(now)
            bucket = self._buckets[host] = [self.burst, now]
        else:
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            bucket[0] = tokens if tokens < self.burst else self.burst
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def _prune(self, now: float) -> None:
        refill = self.burst / self.rate
        for host, (_, last) in list(self._buckets.items()):
            if now - last >= refill:
                del self._buckets[host]
        if len(self._buckets) >= self._max:
            self._buckets.clear()
