"""Key functions: whose quota a request spends (client IP, user, API key, compositions)."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, overload

from gennet_toolkit.exceptions import ConfigurationError

__all__ = ["ClientIP", "Key", "by_api_key", "by_ip", "by_user"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# More forwarded hops than this is not a real proxy chain; stop and use the peer.
_MAX_HOPS = 32
_MAX_TOKEN = 4096


class Key:
    """A key function with a name, composable with ``|`` (fallback) and ``&`` (both).

    ``Key(fn, name="tenant")`` wraps any ``fn(scope) -> str | None``. ``by_user | by_ip``
    keys signed-in users by id and everyone else by address (``"user:42"`` or
    ``"ip:192.0.2.1"``); ``by_api_key & by_ip`` gives each key a quota per address and
    skips the rule when either part is missing.
    """

    __slots__ = ("_fn", "name")

    def __init__(self, fn: Callable[[Any], str | None], *, name: str) -> None:
        self._fn = fn
        self.name = name

    def __call__(self, scope: Mapping[str, Any]) -> str | None:
        """The identity for this request, or ``None`` when there is none."""
        return self._fn(scope)

    def __or__(self, other: Callable[[Any], str | None]) -> Key:
        first, second = self, _as_key(other)

        def either(scope: Mapping[str, Any]) -> str | None:
            value = first(scope)
            if value is not None:
                return f"{first.name}:{value}"
            value = second(scope)
            return None if value is None else f"{second.name}:{value}"

        return Key(either, name=f"{first.name}|{second.name}")

    def __and__(self, other: Callable[[Any], str | None]) -> Key:
        first, second = self, _as_key(other)

        def both(scope: Mapping[str, Any]) -> str | None:
            a = first(scope)
            if a is None:
                return None
            b = second(scope)
            return None if b is None else f"{first.name}:{a}&{second.name}:{b}"

        return Key(both, name=f"{first.name}&{second.name}")

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


def _as_key(fn: Callable[[Any], str | None]) -> Key:
    if isinstance(fn, Key):
        return fn
    if not callable(fn):
        raise ConfigurationError(f"keys compose only with callables, got {fn!r}")
    return Key(fn, name=getattr(fn, "__name__", "key"))


def _parse_ip(text: str) -> IPAddress | None:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` or ``[::1]:80``."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _split_quoted(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (RFC 7239 quoted-strings may hold commas)."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _forwarded_for(element: str) -> str | None:
    """The ``for=`` value of one RFC 7239 ``Forwarded`` element, unquoted."""
    found: str | None = None
    for pair in _split_quoted(element, ";"):
        name, eq, value = pair.partition("=")
        if not eq:
            return None
        if name.strip().lower() == "for":
            if found is not None:
                return None  # two for= in one element: not a header a proxy wrote
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            found = value
    return found


class ClientIP(Key):
    """Key by client address, reading proxy headers only from trusted proxies.

    ``ClientIP(trusted_proxies=["10.0.0.0/8"], header="x-forwarded-for")``. The peer
    is ``scope["client"]``. Only when the peer is inside ``trusted_proxies`` is
    ``header`` (``"x-forwarded-for"`` or ``"forwarded"``, exactly the one your proxy
    writes: the other could be forged by clients) read, right to left, skipping trusted
    hops: the first untrusted hop is the client. A malformed or overlong header falls
    back to the peer. IPv6 clients are keyed by their ``/ipv6_prefix`` network (64 by
    default: one subscriber usually holds a whole /64).
    """

    __slots__ = ("_forwarded", "_networks", "_v6_prefix", "header", "trusted_proxies")

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[str] = (),
        header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for",
        ipv6_prefix: int = 64,
    ) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [trusted_proxies]
        self.trusted_proxies = tuple(trusted_proxies)
        networks: list[IPNetwork] = []
        for net in self.trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(net.strip(), strict=False))
            except ValueError as exc:
                raise ConfigurationError(f"invalid trusted proxy network {net!r}") from exc
        self._networks = tuple(networks)
        header = header.lower()  # type: ignore[assignment]
        if header not in {"x-forwarded-for", "forwarded"}:
            raise ConfigurationError(
                f"header must be 'x-forwarded-for' or 'forwarded', got {header!r}"
            )
        self.header = header
        self._forwarded = header == "forwarded"
        if not 1 <= ipv6_prefix <= 128:
            raise ConfigurationError(f"ipv6_prefix must be between 1 and 128, got {ipv6_prefix}")
        self._v6_prefix = ipv6_prefix
        super().__init__(self._client_ip, name="ip")

    @overload
    def __call__(self, scope: Mapping[str, Any], /) -> str | None: ...

    @overload
    def __call__(
        self,
        *,
        trusted_proxies: Iterable[str] = ...,
        header: Literal["x-forwarded-for", "forwarded"] = ...,
        ipv6_prefix: int = ...,
    ) -> ClientIP: ...

    def __call__(
        self,
        scope: Mapping[str, Any] | None = None,
        *,
        trusted_proxies: Iterable[str] | None = None,
        header: Literal["x-forwarded-for", "forwarded"] | None = None,
        ipv6_prefix: int | None = None,
    ) -> str | ClientIP | None:
        """The client address for ``scope``; or, called with keywords only, a configured
        copy: ``by_ip(trusted_proxies=["10.0.0.0/8"])``."""
        configured = (trusted_proxies, header, ipv6_prefix) != (None, None, None)
        if scope is not None:
            if configured:
                raise TypeError("pass either a scope or configuration keywords, not both")
            return self._client_ip(scope)
        if not configured:
            raise TypeError("by_ip() needs a scope, or keywords to configure a copy")
        return ClientIP(
            trusted_proxies=self.trusted_proxies if trusted_proxies is None else trusted_proxies,
            header=self.header if header is None else header,
            ipv6_prefix=self._v6_prefix if ipv6_prefix is None else ipv6_prefix,
        )

    def trusting(self, *networks: str) -> ClientIP:
        """A copy that also trusts proxy headers from ``networks`` (CIDRs or addresses)."""
        return ClientIP(
            trusted_proxies=(*self.trusted_proxies, *networks),
            header=self.header,
            ipv6_prefix=self._v6_prefix,
        )

    def __repr__(self) -> str:
        return f"ClientIP(trusted_proxies={list(self.trusted_proxies)!r}, header={self.header!r})"

    def _format(self, ip: IPAddress) -> str:
        if isinstance(ip, ipaddress.IPv6Address) and self._v6_prefix < 128:
            net = ipaddress.IPv6Network((int(ip), self._v6_prefix), strict=False)
            return str(net)
        return str(ip)

    def _trusted(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._networks)

    def _client_ip(self, scope: Mapping[str, Any]) -> str | None:
        client = scope.get("client")
        if not client:
            return None
        host = str(client[0])
        peer = _parse_ip(host)
        if peer is None:
            # Not an address (a unix socket path, Starlette's "testclient"): key by it as is.
            return host[:100]
        if not self._networks or not self._trusted(peer):
            return self._format(peer)
        hops = self._hops(scope)
        if hops is None:
            return self._format(peer)
        found: IPAddress | None = None
        for hop in reversed(hops):
            ip = _parse_ip(hop)
            if ip is None:
                return self._format(peer)
            found = ip
            if not self._trusted(ip):
                return self._format(ip)
        # Every hop is one of our proxies: the left-most one is the client.
        return self._format(found if found is not None else peer)

    def _hops(self, scope: Mapping[str, Any]) -> list[str] | None:
        """The forwarded hops, nearest last; ``None`` when absent or unusable."""
        name = b"forwarded" if self._forwarded else b"x-forwarded-for"
        values: list[str] = []
        for key, value in scope.get("headers") or ():
            if key.lower() == name:
                values.append(value.decode("latin-1"))
        if not values:
            return None
        joined = ",".join(values)
        if len(joined) > _MAX_TOKEN:
            return None
        if not self._forwarded:
            parts = joined.split(",")
        else:
            parts = []
            for element in _split_quoted(joined, ","):
                value = _forwarded_for(element)
                if value is None:
                    return None
                parts.append(value)
        if len(parts) > _MAX_HOPS:
            return None
        return parts


#: Key by client address (``scope["client"]``); trusts no proxy header. Configure proxies
#: with ``by_ip(trusted_proxies=["10.0.0.0/8"])`` (a configured copy) or :class:`ClientIP`.
by_ip = ClientIP()


def _user_id(scope: Mapping[str, Any]) -> str | None:
    state = scope.get("state")
    user: Any = None
    if isinstance(state, Mapping):
        uid = state.get("user_id")
        if uid is not None and uid != "":
            return str(uid)
        user = state.get("user")
    if user is None:
        user = scope.get("user")
    if user is None:
        return None
    if isinstance(user, str | int):
        return str(user) if user != "" else None
    if getattr(user, "is_authenticated", True) is False:
        return None
    for attr in ("identity", "id", "user_id", "username"):
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:  # Starlette's BaseUser.identity
            continue
        if value is not None and value != "" and not callable(value):
            return str(value)
    return None


#: Key by signed-in user: ``scope["state"]["user_id"]`` (``request.state.user_id``), else
#: ``request.state.user`` or ``scope["user"]`` (Starlette's AuthenticationMiddleware)
#: through its ``identity``, ``id``, ``user_id`` or ``username``. Anonymous requests
#: give ``None`` (the rule does not apply): combine with ``by_user | by_ip``.
by_user = Key(_user_id, name="user")


def _api_key(scope: Mapping[str, Any]) -> str | None:
    token: bytes | None = None
    bearer: bytes | None = None
    for key, value in scope.get("headers") or ():
        name = key.lower()
        if name == b"x-api-key":
            token = value.strip()
        elif name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                bearer = credentials.strip()
    token = token or bearer
    if not token or len(token) > _MAX_TOKEN:
        return None
    # Only a digest reaches the store: the secret itself never sits in Redis.
    return hashlib.blake2b(token, digest_size=16).hexdigest()


#: Key by API key from ``X-API-Key`` or ``Authorization: Bearer``; the key is hashed
#: (BLAKE2b) so stored counters never reveal it. No key gives ``None``.
by_api_key = Key(_api_key, name="api_key")
