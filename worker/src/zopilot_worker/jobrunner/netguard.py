"""Where a job's URL fetches may connect: the SSRF guard under the HTTP client.

A DocumentJob names URLs chosen by whoever submits it, and the worker pod sits
inside the cluster: next to the Kubernetes API, other tenants' services, the
node's kubelet and the cloud's instance-metadata endpoint (credentials). So
every connection a fetch makes, to the first URL and to each redirect, goes
through :class:`GuardedBackend`, an httpcore network backend that

1. resolves the host name once (``resolver``, ``getaddrinfo`` by default),
2. refuses the host if *any* of its addresses is in a refused range
   (:meth:`AddressPolicy.refusal`),
3. connects to one of those validated IP addresses itself, never to the name
   (so a DNS answer that changes between check and connect, "DNS rebinding",
   cannot reach anything: there is no second lookup), while TLS still
   verifies the certificate for the name (SNI and the Host header come from
   the URL), and
4. checks the connected socket's peer address once more.

Refused always: unspecified (0.0.0.0, ::), link-local (169.254.0.0/16,
fe80::/10; the metadata services live there), multicast, broadcast and
reserved ranges, and the known cloud-metadata addresses outside link-local
(fd00:ec2::254, 100.100.100.200, 192.0.0.192). Refused unless allowed by
``allow_private`` or the host's listing in ``private_hosts``: every other
non-global address: loopback, RFC 1918, unique-local, CGNAT, site-local,
documentation and benchmark ranges. IPv4-mapped, NAT64 and 6to4 IPv6
addresses are judged by the IPv4 address inside them.

It also bounds time: :func:`deadline` sets a monotonic deadline for the
fetch in progress (a context variable, so per thread), and every DNS lookup,
connect, TLS handshake, read and write is given at most the time left, so a
server that trickles one byte per read timeout (or a resolver that never
answers) cannot hold a fetch past it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpcore

from zopilot_worker.errors import FetchError, FetchRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
"""``(host, port) -> [ip, ...]``; raises ``socket.gaierror`` like ``getaddrinfo``."""

_METADATA = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ... (link-local anyway)
        "169.254.170.2/32",  # AWS ECS task metadata
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "100.100.100.200/32",  # Alibaba Cloud
        "192.0.0.192/32",  # Oracle Cloud
    )
)
_ALWAYS_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "169.254.0.0/16",  # IPv4 link-local
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255
        "::/128",
        "fe80::/10",  # IPv6 link-local
        "ff00::/8",  # IPv6 multicast
    )
)
# Not global, though ipaddress.is_global says so on Python 3.11.
_ALSO_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("fec0::/10",))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


_LEGACY_IPV4_CHARS = frozenset("0123456789abcdefxABCDEFX.")


def parse_ip(text: str) -> IPAddress | None:
    """The IP address in ``text`` (an IPv6 zone id dropped), or None if it is not one.

    Also the legacy IPv4 spellings ``getaddrinfo`` accepts without asking DNS
    (``2130706433``, ``0x7f.1``, ``127.1``): they are addresses, not names.
    """
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if text and set(text) <= _LEGACY_IPV4_CHARS and any(c.isdigit() for c in text[:1]):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets; IP literals in canonical form."""
    host = host.strip().strip("[]").rstrip(".").lower()
    ip = parse_ip(host)
    return str(ip) if ip is not None else host


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """``host`` equals a pattern, or a ``.suffix`` pattern names one of its parent domains."""
    name = normalize_host(host)
    for pattern in patterns:
        entry = normalize_host(pattern)
        if pattern.startswith(".") and entry:
            if name.endswith("." + entry.lstrip(".")):
                return True
        elif entry and name == entry:
            return True
    return False


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a fetch may connect to; see the module docstring."""

    allow_private: bool = False
    private_hosts: tuple[str, ...] = field(default_factory=tuple)

    def refusal(self, ip: IPAddress, *, host: str = "") -> str | None:
        """Why ``ip`` (reached for ``host``) is refused, or None if it is allowed."""
        candidates: list[IPAddress] = [ip]
        inner = _embedded_ipv4(ip)
        if inner is not None:
            candidates.append(inner)
        for candidate in candidates:
            if any(candidate in net for net in _METADATA):
                return "a cloud-metadata address"
            if any(candidate in net for net in _ALWAYS_REFUSED):
                return "a link-local, unspecified, multicast or reserved address"
        private_ok = self.allow_private or (host and host_matches(host, self.private_hosts))
        if private_ok:
            return None
        for candidate in candidates:
            if not candidate.is_global or any(candidate in net for net in _ALSO_PRIVATE):
                return "a loopback, private or otherwise non-public address"
        return None


_DNS_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_DNS_POOL_LOCK = threading.Lock()


def _dns_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _DNS_POOL
    with _DNS_POOL_LOCK:
        if _DNS_POOL is None:
            _DNS_POOL = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="fetch-dns")
        return _DNS_POOL


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses ``getaddrinfo`` gives for ``host`` (TCP), in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


# --- the deadline of the fetch in progress --------------------------------------------

_DEADLINE: ContextVar[float | None] = ContextVar("zopilot_fetch_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Run the block with a fetch deadline ``seconds`` from now; yields it (monotonic)."""
    at = time.monotonic() + seconds
    token = _DEADLINE.set(at)
    try:
        yield at
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to the time left before the deadline; raises ``error`` when none is."""
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise error("the fetch deadline has passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the fetch deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolve once, validate every address, connect to a validated IP (see module doc)."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolver = resolver or system_resolver
        self._inner = inner or httpcore.SyncBackend()

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The host's addresses, all of them allowed; raises FetchRefused / FetchError."""
        literal = parse_ip(host)
        if literal is not None:
            texts = [str(literal)]
        else:
            try:
                texts = self._lookup(host, port)
            except socket.gaierror as exc:
                # EAI_AGAIN: the resolver could not answer now; anything else: no such name.
                temporary = exc.errno == socket.EAI_AGAIN
                what = "cannot be resolved right now" if temporary else "does not exist (DNS)"
                raise FetchError(
                    f"host {host!r} {what}", retriable=temporary, detail=repr(exc)
                ) from None
            except (UnicodeError, ValueError, OSError) as exc:
                raise FetchError(
                    f"host {host!r} cannot be resolved", retriable=False, detail=repr(exc)
                ) from None
        addresses = [ip for ip in (parse_ip(t) for t in texts) if ip is not None]
        if not addresses:
            raise FetchError(f"host {host!r} has no usable address", retriable=False)
        for ip in addresses:
            reason = self.policy.refusal(ip, host=host)
            if reason is not None:
                shown = host if literal is not None else f"{host} (resolves to {ip})"
                raise FetchRefused(
                    f"refused to connect to {shown}: {reason}; job URLs may only reach "
                    "public addresses (see fetch_allow_private_networks / fetch_private_hosts)"
                )
        return addresses

    def _lookup(self, host: str, port: int) -> list[str]:
        """The resolver, bounded by the fetch deadline (getaddrinfo has no timeout of its own:
        it runs in a helper thread that is abandoned, not killed, when the deadline passes)."""
        left = time_left()
        if left is None:
            return self._resolver(host, port)
        if left <= 0:
            raise FetchError(f"no time left to resolve {host!r}", retriable=True)
        future = _dns_pool().submit(self._resolver, host, port)
        try:
            return future.result(timeout=left)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise FetchError(
                f"resolving {host!r} did not finish within the fetch deadline", retriable=True
            ) from None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.resolve(host, port)
        last: Exception | None = None
        for ip in addresses:
            try:
                stream = self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=_bounded(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            self._check_peer(stream, host)
            return DeadlineStream(stream)
        assert last is not None
        raise last

    def _check_peer(self, stream: httpcore.NetworkStream, host: str) -> None:
        """The address actually connected to, checked again (belt and braces)."""
        peer = stream.get_extra_info("server_addr")
        ip = parse_ip(str(peer[0])) if isinstance(peer, tuple) and peer else None
        reason = None if ip is None else self.policy.refusal(ip, host=host)
        if reason is not None:
            stream.close()
            raise FetchRefused(f"refused the connection to {host} at {ip}: {reason}")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise FetchRefused("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)
