"""Outbound URL policy: where SpeechFlow may be told to POST a callback, or to GET audio from.

A callback URL is chosen by the client, and the server makes the request, so an unchecked URL lets
a client reach what only the server can: the cloud metadata endpoint, the database, the cluster's
internal services. The policy:

- https only;
- every address the host resolves to must be public: no private, loopback, link-local (the metadata
  endpoint 169.254.169.254 among them), unique-local (fd00:ec2::254), multicast or reserved ones;
- no credentials in the URL;
- hosts on the CALLBACK_ALLOWED_HOSTS allow-list skip the scheme and address checks (local development).

The check runs when the job is submitted (422) and again right before each delivery, because a host
name can resolve to a public address at submit time and to an internal one later (DNS rebinding).

An `audio_url` (the FETCH step, shared/steps/fetch.py) follows the same policy with its own
allow-list, FETCH_ALLOWED_HOSTS; the step checks every redirect hop again and connects to the address
it checked, so that a second resolution cannot lead it elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from shared.core.config import Settings

Resolver = Callable[[str, int], list[str]]
"""(host, port) → the addresses a connection could go to."""

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES: frozenset[IpAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # Azure IMDS, AWS, GCP, OpenStack
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)


class UnsafeUrl(ValueError):
    """The URL is refused by the policy; the message says why (naming the host, never the query)."""


class UnsafeCallbackUrl(UnsafeUrl):
    """The callback URL is refused by the policy; the message says why."""


class UnsafeFetchUrl(UnsafeUrl):
    """The audio URL (or a redirect from it) is refused by the policy; the message says why."""


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


NAT64_PREFIXES = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
"""NAT64's well-known prefix and its local-use prefix (RFC 6052, RFC 8215): a translator forwards to the
IPv4 address in the last 32 bits (the local-use prefix is read in the same /96 layout)."""
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, which is where a connection to it may end up:
    IPv4-mapped and -translated, 6to4 (its gateway's IPv4), Teredo (the server and the client), the
    deprecated IPv4-compatible form, NAT64. Empty for an ordinary IPv6 address."""
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    translated = any(address in prefix for prefix in (*NAT64_PREFIXES, _IPV4_TRANSLATED))
    compatible = address in _IPV4_COMPATIBLE and int(address) > 1  # not :: nor ::1, which are themselves
    if translated or compatible:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refusal_reason(address: str) -> str | None:
    """Why a connection to this address is refused, or None when it is a public address.

    An IPv6 address that embeds an IPv4 address is judged by the IPv4 address it embeds (every one, for
    Teredo): `2002:7f00:1::` is 127.0.0.1 through 6to4."""
    try:
        parsed: IpAddress = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.scope_id:
            parsed = ipaddress.IPv6Address(str(parsed).split("%", 1)[0])
        if embedded := embedded_ipv4(parsed):
            for inner in embedded:
                if (reason := refusal_reason(str(inner))) is not None:
                    return f"{reason} (embedded as {inner})"
            return None
    if parsed in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if parsed.is_loopback:
        return "a loopback address"
    if parsed.is_link_local:
        return "a link-local address"
    if parsed.is_private:
        return "a private address"
    if parsed.is_multicast or parsed.is_unspecified or parsed.is_reserved or not parsed.is_global:
        return "a non-public address"
    return None


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    """Whether the allow-list names the host (`.example.com` also covers its subdomains)."""
    host = host.lower().rstrip(".")
    for allowed in (entry.lower().rstrip(".") for entry in allowed_hosts):
        if allowed.startswith("."):
            if host.endswith(allowed) or host == allowed[1:]:
                return True
        elif host == allowed:
            return True
    return False


def check_callback_url(url: str, settings: Settings, *, resolver: Resolver = system_resolver) -> list[str]:
    """Raise `UnsafeCallbackUrl` unless the policy allows POSTing to `url`.

    Returns the public addresses the host resolved to (empty for an allow-listed host).
    """
    return _check_url(
        url,
        field="callback_url",
        allowed_hosts=settings.callback_allowed_hosts,
        refused=UnsafeCallbackUrl,
        resolver=resolver,
        credentials_hint="; verify the webhook signature instead",
    )


def check_fetch_url(
    url: str, settings: Settings, *, resolver: Resolver = system_resolver, field: str = "audio_url"
) -> list[str]:
    """Raise `UnsafeFetchUrl` unless the policy allows GETting audio from `url` (or from a redirect
    target, or listing a batch's `container_url`, named by `field` in the message). Returns the public
    addresses the host resolved to (empty for an allow-listed host)."""
    return _check_url(
        url,
        field=field,
        allowed_hosts=settings.fetch_allowed_hosts,
        refused=UnsafeFetchUrl,
        resolver=resolver,
        credentials_hint="; a signed URL (such as an Azure SAS) carries its access in the query",
    )


def _check_url(
    url: str,
    *,
    field: str,
    allowed_hosts: list[str],
    refused: type[UnsafeUrl],
    resolver: Resolver,
    credentials_hint: str,
) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unbalanced IPv6 bracket, for one
        raise refused(f"{field} is not a valid URL") from error
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        raise refused(f"{field} must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise refused(f"{field} must not carry credentials{credentials_hint}")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as error:
        raise refused(f"{field} has an invalid port") from error
    if host_allowed(host, allowed_hosts):
        return []
    if scheme != "https":
        raise refused(f"{field} must use https")
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as error:
        raise refused(f"{field} host {host} cannot be resolved") from error
    if not addresses:
        raise refused(f"{field} host {host} cannot be resolved")
    for address in addresses:
        reason = refusal_reason(address)
        if reason is not None:
            raise refused(f"{field} host {host} resolves to {reason} ({address})")
    return addresses


def check_callback_url_at_delivery(url: str, settings: Settings, *, resolver: Resolver = system_resolver) -> None:
    """The same policy, applied again right before a delivery (the host's addresses may have changed)."""
    check_callback_url(url, settings, resolver=resolver)
