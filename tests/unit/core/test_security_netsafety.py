"""The callback URL policy (submit time and delivery time) and upload file names, without I/O."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from functions.api.schemas import CreateJobRequest, safe_filename
from shared.core.config import Settings
from shared.core.netsafety import (
    UnsafeCallbackUrl,
    UnsafeUrl,
    check_callback_url,
    check_fetch_url,
    host_allowed,
    refusal_reason,
)

PUBLIC = "93.184.215.14"


def resolver(*addresses: str) -> Any:
    def resolve(_host: str, _port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.170.2", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("0.0.0.0", "address"),
        ("100.64.0.1", "non-public"),
        ("224.0.0.1", "non-public"),
        ("240.0.0.1", "address"),
        ("::", "address"),
        ("not-an-ip", "not an IP"),
    ],
)
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    found = refusal_reason(address)
    assert found is not None and reason in found


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(address) is None


def test_https_to_a_public_host_passes(settings: Settings) -> None:
    assert check_callback_url("https://hooks.example.com/x?y=1", settings, resolver=resolver(PUBLIC)) == [PUBLIC]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/x", "https"),
        ("ftp://hooks.example.com/x", "http(s)"),
        ("https:///nohost", "http(s)"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com:99999/x", "port"),
    ],
)
def test_malformed_or_plain_http_urls_are_refused(settings: Settings, url: str, message: str) -> None:
    with pytest.raises(UnsafeCallbackUrl, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_callback_url(url, settings, resolver=resolver(PUBLIC))


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "fd00:ec2::254"])
def test_a_host_resolving_to_an_internal_address_is_refused(settings: Settings, address: str) -> None:
    with pytest.raises(UnsafeCallbackUrl, match="resolves to"):
        check_callback_url("https://innocent.example.com/hook", settings, resolver=resolver(PUBLIC, address))


def test_an_unresolvable_host_is_refused(settings: Settings) -> None:
    def fails(_host: str, _port: int) -> list[str]:
        raise socket.gaierror("no such host")

    with pytest.raises(UnsafeCallbackUrl, match="cannot be resolved"):
        check_callback_url("https://nowhere.invalid/hook", settings, resolver=fails)
    with pytest.raises(UnsafeCallbackUrl, match="cannot be resolved"):
        check_callback_url("https://nowhere.invalid/hook", settings, resolver=resolver())


def test_allow_listed_hosts_skip_scheme_and_address_checks() -> None:
    settings = Settings(callback_allowed_hosts="localhost,.internal.test")
    unused = resolver("127.0.0.1")
    assert check_callback_url("http://localhost:8080/hook", settings, resolver=unused) == []
    assert check_callback_url("http://a.b.internal.test/hook", settings, resolver=unused) == []
    assert check_callback_url("http://internal.test/hook", settings, resolver=unused) == []
    with pytest.raises(UnsafeCallbackUrl):
        check_callback_url("http://evilinternal.test/hook", settings, resolver=unused)
    assert host_allowed("LOCALHOST.", ["localhost"])
    assert not host_allowed("localhost.evil.com", ["localhost"])


# --- upload file names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.wav", "evil.wav"),
        ("/abs/path/talk.mp3", "talk.mp3"),
        ("..", "upload"),
        ("...", "upload"),
        ("a/..", "upload"),
        ("talk\x00.wav", "talk_.wav"),
        ("réunion du 3 mai.wav", "r_union du 3 mai.wav"),
        ("x%2F..%2Fy.wav", "x_2F.._2Fy.wav"),
        ("line\nbreak.wav", "line_break.wav"),
    ],
)
def test_filenames_cannot_leave_the_jobs_folder(name: str, expected: str) -> None:
    safe = safe_filename(name)
    assert safe == expected
    assert "/" not in safe and "\\" not in safe and safe not in {".", ".."} and "\x00" not in safe


def test_filenames_are_limited_in_length() -> None:
    assert len(safe_filename("a" * 250 + ".wav")) == 200
    CreateJobRequest(workflow_type="lid_only", audio_filename="a" * 255)
    with pytest.raises(ValueError, match="255"):
        CreateJobRequest(workflow_type="lid_only", audio_filename="a" * 256)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1, the form an outside probe got through
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 of 169.254.169.254
        ("2002:0a00:0001::", "private"),  # 6to4 of 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1 (stored inverted)
        ("2001:0:7f00:1:8000:63bf:3fff:fdd2", "loopback"),  # Teredo, server 127.0.0.1
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("::10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 well-known prefix
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("64:ff9b:1::c0a8:101", "private"),  # NAT64 local-use prefix, 192.168.1.1
        ("::ffff:0:7f00:1", "loopback"),  # IPv4-translated (SIIT)
    ],
)
def test_ipv6_forms_that_embed_an_internal_ipv4_address_are_refused_by_it(address: str, reason: str) -> None:
    found = refusal_reason(address)
    assert found is not None and reason in found and "embedded as" in found


@pytest.mark.parametrize("address", ["2002:808:808::1", "64:ff9b::808:808", "::ffff:0:808:808"])
def test_ipv6_forms_that_embed_a_public_ipv4_address_are_judged_by_it(address: str) -> None:
    assert refusal_reason(address) is None


@pytest.mark.parametrize("url", ["https://[2002:7f00:1::]/a", "https://[64:ff9b::a9fe:a9fe]/latest/meta-data"])
def test_audio_and_callback_urls_naming_an_embedded_internal_address_are_refused(settings: Settings, url: str) -> None:
    with pytest.raises(UnsafeUrl, match="embedded as"):
        check_fetch_url(url, settings)
    with pytest.raises(UnsafeUrl, match="embedded as"):
        check_callback_url(url, settings)
