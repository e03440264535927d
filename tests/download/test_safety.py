"""The crawler policy: address classes, X-Robots-Tag parsing, error classes."""

from __future__ import annotations

from email.message import Message

import pytest

from curate.download import FetchPolicy, classify_error, robots_optout, user_agent


@pytest.mark.parametrize("ip, why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("10.0.0.8", "private"), ("192.168.1.1", "private"), ("172.16.5.4", "private"), ("fd00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("100.100.100.200", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
    ("100.64.0.1", "not globally routable"),
])
def test_refused_addresses(ip, why):
    assert FetchPolicy().address_problem(ip) == why


@pytest.mark.parametrize("ip", ["8.8.8.8", "151.101.1.69", "2a04:4e42::81"])
def test_public_addresses_allowed(ip):
    assert FetchPolicy().address_problem(ip) is None


def test_allow_lists():
    p = FetchPolicy(allow_networks=["127.0.0.1/32"])
    assert p.address_problem("127.0.0.1") is None
    assert p.address_problem("127.0.0.2") == "loopback"
    assert FetchPolicy(allow_private=True).address_problem("169.254.169.254") is None


def test_resolve_refuses_names_that_point_inside():
    with pytest.raises(OSError, match="blocked address: host localhost resolves to"):
        FetchPolicy().resolve("localhost", 80)


def _headers(*values):
    m = Message()
    for v in values:
        m["X-Robots-Tag"] = v
    return m


@pytest.mark.parametrize("values, hit", [
    (["noai"], "noai"),
    (["NoImageAI, nofollow"], "NoImageAI, nofollow"),
    (["curate: noai"], "curate: noai"),
    (["img2dataset: noimageai"], "img2dataset: noimageai"),
    (["googlebot: noai"], None),
    (["noindex"], None),
    (["googlebot: noai", "noimageai"], "noimageai"),
    ([], None),
])
def test_robots_optout(values, hit):
    assert robots_optout(_headers(*values), {"curate", "img2dataset"}, {"noai", "noimageai"}) == hit


@pytest.mark.parametrize("message, cls", [
    ("HTTP Error 404: Not Found", "http_404"),
    ("HTTP Error 503: Service Unavailable", "http_error"),
    ("<urlopen error timed out>", "timeout"),
    ("The read operation timed out", "timeout"),
    ("<urlopen error [Errno 111] Connection refused>", "connection_error"),
    ("<urlopen error blocked address: host a resolves to 10.0.0.1 (private)>", "blocked_address"),
    ("Use of image disallowed by X-Robots-Tag directive", "robots_optout"),
    ("image too small", "too_small"),
    ("image area too large (30000x30000 pixels)", "too_large"),
    ("not an image (content starts with b'<html>')", "not_an_image"),
    ("Image decoding error", "decode_error"),
    ("something new", "other"),
    (None, None),
])
def test_error_classes(message, cls):
    assert classify_error(message) == cls


def test_user_agent_names_us():
    ua = user_agent("curate")
    assert ua.startswith("curate/") and "+http" in ua and "Mozilla" not in ua
