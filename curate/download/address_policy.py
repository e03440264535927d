"""Which addresses and ports the downloader may dial (``FetchPolicy``), and name resolution
given up at the request's deadline.

By default loopback, private, link-local, shared (CGNAT), multicast, reserved, documentation,
site-local and cloud-metadata addresses are refused, and IPv6 forms that embed an IPv4 address
(mapped, compatible, 6to4, Teredo, NAT64) are judged by the address they embed. The checked
address is the one dialled (``curate.download.safety``), so DNS rebinding cannot slip a second
answer in."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from dataclasses import dataclass, field

from curate.errors import CurateError


# Cloud metadata endpoints that are not already link-local or private.
METADATA_ADDRESSES = frozenset({"100.100.100.200", "fd00:ec2::254", "168.63.129.16"})

# Special-purpose ranges refused by default, with the reason reported (IANA special-purpose
# registries). Written out rather than taken from ``ipaddress.is_global``, whose answers
# change between Python versions and call 64:ff9b::/96, ::/96, 5f00::/16 or fec0::/10 global.
_V4_SPECIAL = [
    ("0.0.0.0/32", "unspecified"), ("0.0.0.0/8", "this network"), ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"), ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"), ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"), ("240.0.0.0/4", "reserved"),
]
_V6_SPECIAL = [
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("64:ff9b:1::/48", "NAT64 local-use prefix"),
    ("100::/64", "discard-only"), ("2001:2::/48", "benchmarking"), ("2001:db8::/32", "documentation"),
    ("2001:10::/28", "ORCHID"), ("2001::/23", "IETF protocol assignments"), ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 segment identifiers"), ("fc00::/7", "private"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("ff00::/8", "multicast"), ("::/8", "reserved"),
]
_V4_TABLE = [(ipaddress.ip_network(n), why) for n, why in _V4_SPECIAL]
_V6_TABLE = [(ipaddress.ip_network(n), why) for n, why in _V6_SPECIAL]
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_V4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


class BlockedAddressError(OSError):
    """The host resolves only to addresses the policy refuses."""


# ---------------------------------------------------------------- addresses
@dataclass(frozen=True)
class AllowEntry:
    """One --allow-network entry: a network and optionally one port or a port range."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    ports: tuple[int, int] | None = None

    def allows(self, addr, port: int | None) -> bool:
        if addr.version != self.network.version or addr not in self.network:
            return False
        return self.ports is None or (port is not None and self.ports[0] <= port <= self.ports[1])


def parse_allow_entry(text: str) -> AllowEntry:
    """``10.0.0.0/8``, ``127.0.0.1:8080``, ``127.0.0.0/8:8000-8099``, ``::1``, ``[::1]:8080``,
    ``[fd00::/8]:443``. Raises CurateError naming the entry."""
    s = text.strip()
    port_text = None
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or (s[end + 1:] and not s[end + 1:].startswith(":")):
            raise CurateError(f"--allow-network {text!r}: write an IPv6 network with a port as [ADDRESS/PREFIX]:PORT")
        net_text, port_text = s[1:end], (s[end + 2:] or None)
    elif s.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        net_text, port_text = s.split(":")
    else:
        net_text = s
    try:
        network = ipaddress.ip_network(net_text, strict=False)
    except ValueError as e:
        raise CurateError(f"--allow-network {text!r}: not an address or CIDR network ({e})") from None
    ports = None
    if port_text is not None:
        m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", port_text)
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, -1)
        if not m or not (1 <= lo <= hi <= 65535):
            raise CurateError(f"--allow-network {text!r}: the port must be a number 1-65535 or a range like 8000-8099")
        ports = (lo, hi)
    return AllowEntry(network, ports)


def embedded_ipv4(addr) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, with the mechanism's name."""
    if addr.version != 6:
        return []
    if addr in _6TO4:
        return [("6to4", addr.sixtofour)]
    if addr in _TEREDO:
        server, client = addr.teredo
        return [("Teredo server", server), ("Teredo client", client)]
    if addr in _NAT64:
        return [("NAT64", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))]
    if addr in _V4_TRANSLATED:
        return [("IPv4-translated", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))]
    if addr in _V4_COMPATIBLE and int(addr) > 1:
        return [("IPv4-compatible", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))]
    return []


def _special(addr) -> str | None:
    if str(addr) in METADATA_ADDRESSES:
        return "cloud metadata"
    for net, why in (_V4_TABLE if addr.version == 4 else _V6_TABLE):
        if addr in net:
            return why
    return None


@dataclass
class FetchPolicy:
    """What the downloader may connect to and how much it may read. Picklable (sent to workers)."""

    allow_private: bool = False  # allow every address (trusted networks only)
    # networks allowed despite the default block, each optionally with a port: see parse_allow_entry
    allow_networks: list[str] = field(default_factory=list)
    allow_file_urls: bool = False
    # object-store folders whose URLs (s3://bucket/imgs/0.jpg) are read with the run's storage
    # settings: curate.download.store_urls
    allow_store_prefixes: list[str] = field(default_factory=list)
    user_agent_token: str = "curate"
    disallowed_directives: list[str] = field(default_factory=lambda: ["noai", "noimageai"])
    max_seconds: float = 30.0  # wall clock for one whole request: connect, headers, redirects, body
    max_bytes: int = 50 * 1024 * 1024

    def check(self) -> None:
        """Raise CurateError for an allow-list entry that does not parse."""
        from curate.download.store_urls import store_prefix

        self._allow_entries()
        for entry in self.allow_store_prefixes:
            store_prefix(entry)
        if not self.max_seconds > 0:
            raise CurateError(f"--max-seconds must be > 0, got {self.max_seconds}")
        if self.max_bytes < 1:
            raise CurateError(f"--max-bytes must be >= 1, got {self.max_bytes}")

    def _allow_entries(self) -> list[AllowEntry]:
        key = tuple(self.allow_networks)
        cached = self.__dict__.get("_parsed")
        if cached is None or cached[0] != key:
            cached = (key, [parse_allow_entry(t) for t in self.allow_networks])
            self.__dict__["_parsed"] = cached
        return cached[1]

    def address_problem(self, ip: str, port: int | None = None) -> str | None:
        """Why dialling ``ip`` (on ``port``) is refused, or None when it is allowed."""
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # the kernel dials the IPv4 address itself
        if self.allow_private:
            return None
        if any(e.allows(addr, port) for e in self._allow_entries()):
            return None
        if addr.version == 4:
            return _special(addr) or (None if addr.is_global else "not globally routable")
        for how, inner in embedded_ipv4(addr):
            why = _special(inner) or (None if inner.is_global else "not globally routable")
            if why:
                return f"{how} address embedding {inner} ({why})"
        if addr in _6TO4 or addr in _TEREDO or addr in _NAT64:
            return None  # decided by the public address it embeds
        why = _special(addr)
        if why:
            return why
        if addr not in _GLOBAL_UNICAST:
            return "reserved"  # every other IPv6 range is unassigned or special
        return None

    def resolve(self, host: str, port: int, deadline: float | None = None) -> list[tuple]:
        """Allowed getaddrinfo entries for host:port; raises BlockedAddressError if none, and
        TimeoutError when the lookup has not finished by ``deadline`` (time.monotonic())."""
        try:
            infos = _getaddrinfo_until(host, port, deadline, self.max_seconds)
        except socket.gaierror as e:
            raise OSError(f"cannot resolve host {host}: {e.strerror or e}") from e
        allowed, refused = [], []
        for info in infos:
            ip = info[4][0]
            why = self.address_problem(ip, port)
            (refused.append(f"{ip} ({why})") if why else allowed.append(info))
        if not allowed:
            raise BlockedAddressError(f"blocked address: host {host} port {port} resolves to {', '.join(refused)}")
        return allowed


def _getaddrinfo_until(host: str, port: int, deadline: float | None, max_seconds: float) -> list[tuple]:
    """getaddrinfo, given up at ``deadline``: the system resolver cannot be interrupted, so a
    name lookup runs in a helper thread and the request's thread leaves on time (the helper
    ends with the resolver's own timeout). Address literals need no lookup and no thread."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    if literal or deadline is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if deadline <= time.monotonic():
        raise TimeoutError(f"timed out: no time left to resolve {host} within {max_seconds:g}s (--max-seconds)")
    out: dict = {}

    def lookup():
        try:
            out["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as e:  # noqa: BLE001 - handed to the waiting thread
            out["error"] = e

    helper = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    helper.start()
    helper.join(max(0.0, deadline - time.monotonic()))
    if helper.is_alive():
        raise TimeoutError(f"timed out: resolving {host} not complete after {max_seconds:g}s (--max-seconds)")
    if "error" in out:
        raise out["error"]
    return out["infos"]
