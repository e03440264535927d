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
    ("100.64.0.1", "shared address space (CGNAT)"),
    # issue 15 item 9: special ranges Python's is_global lets through, and IPv6 forms that
    # embed an IPv4 address, judged by the address they embed
    ("fec0::1", "site-local"), ("2002:a00:1::1", "6to4 address embedding 10.0.0.1 (private)"),
    ("2002:7f00:1::", "6to4 address embedding 127.0.0.1 (loopback)"),
    ("2002:a9fe:a9fe::", "6to4 address embedding 169.254.169.254 (link-local)"),
    ("64:ff9b::a00:1", "NAT64 address embedding 10.0.0.1 (private)"),
    ("64:ff9b::7f00:1", "NAT64 address embedding 127.0.0.1 (loopback)"),
    ("64:ff9b::a9fe:a9fe", "NAT64 address embedding 169.254.169.254 (link-local)"),
    ("64:ff9b:1::808:808", "NAT64 local-use prefix"),
    ("::10.0.0.1", "IPv4-compatible address embedding 10.0.0.1 (private)"),
    ("::127.0.0.1", "IPv4-compatible address embedding 127.0.0.1 (loopback)"),
    ("::8.8.8.8", "reserved"),  # deprecated form, never dialled as IPv4
    ("::ffff:0:a00:1", "IPv4-translated address embedding 10.0.0.1 (private)"),
    ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "link-local"),
    # Teredo: server 65.54.227.120, client 10.0.0.1 (stored inverted: f5ff:fffe)
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo client address embedding 10.0.0.1 (private)"),
    ("2001:0:a00:1:8000:63bf:3fff:fdd2", "Teredo server address embedding 10.0.0.1 (private)"),
    ("2001:db8::1", "documentation"), ("3fff::1", "documentation"), ("5f00::1", "SRv6 segment identifiers"),
    ("100::1", "discard-only"), ("2001:2::1", "benchmarking"), ("2001:10::1", "ORCHID"),
    ("ff02::1", "multicast"), ("4000::1", "reserved"), ("::", "unspecified"),
    ("192.0.2.7", "documentation"), ("198.51.100.1", "documentation"), ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"), ("192.88.99.1", "6to4 relay anycast"), ("192.0.0.170", "IETF protocol assignments"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "broadcast"), ("0.1.2.3", "this network"),
    ("168.63.129.16", "cloud metadata"),
])
def test_refused_addresses(ip, why):
    assert FetchPolicy().address_problem(ip) == why


@pytest.mark.parametrize("ip", ["8.8.8.8", "151.101.1.69", "2a04:4e42::81",
                                "2002:808:808::1",  # 6to4 of a public address
                                "64:ff9b::808:808",  # NAT64 of a public address
                                "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, public server and client
                                "::ffff:8.8.8.8"])
def test_public_addresses_allowed(ip):
    assert FetchPolicy().address_problem(ip) is None


def test_allow_lists():
    p = FetchPolicy(allow_networks=["127.0.0.1/32"])
    assert p.address_problem("127.0.0.1") is None
    assert p.address_problem("127.0.0.1", 8080) is None  # no port in the entry: every port
    assert p.address_problem("127.0.0.2") == "loopback"
    assert FetchPolicy(allow_private=True).address_problem("169.254.169.254") is None
    # an allowed address does not allow the 6to4/NAT64 forms that embed it (another host)
    assert p.address_problem("2002:7f00:1::") == "6to4 address embedding 127.0.0.1 (loopback)"


@pytest.mark.parametrize("entry, allowed, refused", [
    ("127.0.0.1:8080", [("127.0.0.1", 8080)], [("127.0.0.1", 8081), ("127.0.0.1", None), ("127.0.0.2", 8080)]),
    ("127.0.0.0/8:8000-8099", [("127.0.0.9", 8000), ("127.0.0.1", 8099)], [("127.0.0.1", 8100), ("10.0.0.1", 8000)]),
    ("[::1]:8080", [("::1", 8080)], [("::1", 80), ("127.0.0.1", 8080)]),
    ("[fd00::/8]:443", [("fd12::5", 443)], [("fd12::5", 80)]),
    ("::1", [("::1", 1), ("::1", None)], [("::2", 1)]),
    ("fd00::/8", [("fd00::1", 443)], [("fe80::1", 443)]),
    (" 10.0.0.0/8 ", [("10.9.9.9", 22)], [("192.168.0.1", 22)]),
])
def test_allow_list_entries_with_ports(entry, allowed, refused):
    p = FetchPolicy(allow_networks=[entry])
    p.check()
    for ip, port in allowed:
        assert p.address_problem(ip, port) is None, (entry, ip, port)
    for ip, port in refused:
        assert p.address_problem(ip, port) is not None, (entry, ip, port)


@pytest.mark.parametrize("entry", ["127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:http", "[::1]8080", "[::1",
                                   "localhost", "10.0.0.0/33", "127.0.0.1:90-80", ""])
def test_bad_allow_list_entries_are_one_line_errors(entry):
    from curate.errors import CurateError

    with pytest.raises(CurateError, match="--allow-network"):
        FetchPolicy(allow_networks=[entry]).check()


def test_resolve_refuses_names_that_point_inside():
    with pytest.raises(OSError, match="blocked address: host localhost port 80 resolves to"):
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
    # issue 15 item 10: the whole grammar
    (["*: noai"], "*: noai"),
    (["noindex noai"], "noindex noai"),
    (["noindex  NOIMAGEAI"], "noindex  NOIMAGEAI"),
    (["noindex;noai"], "noindex;noai"),
    (["CURATE:NOAI"], "CURATE:NOAI"),
    (["curate : noindex, noai"], "curate : noindex, noai"),
    (["googlebot: noindex, noai"], None),  # the scope lasts to the end of the header
    (["googlebot: noindex, curate: noai"], "googlebot: noindex, curate: noai"),
    (["curate: noindex, googlebot: noai"], None),
    (["googlebot: noai", "*: noimageai"], "*: noimageai"),
    (["unavailable_after: 25 Jun 2010 15:00:00 PST, noai"], "unavailable_after: 25 Jun 2010 15:00:00 PST, noai"),
    (["unavailable_after: 25 Jun 2010 15:00:00 PST"], None),
    (["max-image-preview:large"], None),
    (["max-image-preview: large noai"], None),  # the value of a directive, not a directive
    (["noaiX, xnoai, no-ai"], None),
    (["googlebot: noai", "bingbot: noai"], None),
    (["all", "none"], None),
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
    ("aspect ratio too large", "bad_aspect_ratio"),
    ("unsupported image format HEIC: no installed decoder reads it", "unsupported_format"),
    ("unsupported image format JPEG2000: decoder jpeg2k not available", "unsupported_format"),
    ("unsupported content encoding 'compress' (accepted: gzip, deflate)", "unsupported_format"),
    ("connection closed early: body shorter than its Content-Length (got 10 bytes, 90 missing)", "connection_error"),
    ("IncompleteRead(100 bytes read, 50 more expected)", "connection_error"),
    ("timed out: request not complete after 1.5s (--max-seconds)", "timeout"),
    ("too large: Content-Length 99999999999 over 52428800 bytes", "too_large"),
    ("too large: decoded body over 1000 bytes", "too_large"),
    ("corrupt content encoding gzip: Error -3 while decompressing data", "decode_error"),
    ("not an image (empty body)", "not_an_image"),
    ("decode error: image file is truncated (3 bytes not processed)", "decode_error"),
    ("<urlopen error unsupported url: invalid host name 'a..b' (x)>", "unsupported_url"),
    ("<urlopen error [Errno 2] No such file or directory: '/p/gone.jpg'>", "missing_object"),  # file://
    ("no such object: s3://b/imgs/gone.jpg", "missing_object"),
    ("blocked store URL: s3://b/x.jpg is not under an --allow-store-prefix folder", "blocked_store_url"),
    ("too large: object of 300002 bytes over 200000 bytes", "too_large"),
    ("cannot connect to storage for s3://b/k: AWS Error NETWORK_CONNECTION", "connection_error"),
    (None, None),
])
def test_error_classes(message, cls):
    assert classify_error(message) == cls


def test_user_agent_names_us():
    ua = user_agent("curate")
    assert ua.startswith("curate/") and "+http" in ua and "Mozilla" not in ua


@pytest.mark.parametrize("url, sent", [
    ("http://h.test/a b.jpg", "http://h.test/a%20b.jpg"),
    ("http://h.test/ä/ö.jpg?q=ü ß", "http://h.test/%C3%A4/%C3%B6.jpg?q=%C3%BC%20%C3%9F"),
    ("http://h.test/已/图片.jpg", "http://h.test/%E5%B7%B2/%E5%9B%BE%E7%89%87.jpg"),
    ("http://h.test/a%20b.jpg", "http://h.test/a%20b.jpg"),  # existing escapes are kept
    ("http://h.test/100%.jpg", "http://h.test/100%.jpg"),  # a lone % as browsers send it
    ("http://h.test/a\"b<c>`{d}.jpg", "http://h.test/a%22b%3Cc%3E%60%7Bd%7D.jpg"),
    ("http://h.test/p?x='a b'&y=\"c\"", "http://h.test/p?x=%27a%20b%27&y=%22c%22"),
    ("http://h.test/p#frag ment", "http://h.test/p"),
    ("  http://h.test/x.jpg\n", "http://h.test/x.jpg"),
    ("http://h.test/x\t\n.jpg", "http://h.test/x.jpg"),
    ("http://h.test/a\\b.jpg", "http://h.test/a/b.jpg"),
    ("http://h.test:8080\\img\\x.jpg?q", "http://h.test:8080/img/x.jpg?q"),  # a backslash ends the host
    ("HTTP://H.Test:8080/X.jpg", "http://h.test:8080/X.jpg"),
    ("http://Bücher.example/x.jpg", "http://xn--bcher-kva.example/x.jpg"),
    ("http://例え.テスト/写真.jpg", "http://xn--r8jz45g.xn--zckzah/%E5%86%99%E7%9C%9F.jpg"),
    ("http://b%C3%BCcher.example/x.jpg", "http://xn--bcher-kva.example/x.jpg"),
    ("http://[::1]:8080/a b", "http://[::1]:8080/a%20b"),
    ("http://h.test", "http://h.test/"),
    ("file:///tmp/a b.jpg", "file:///tmp/a b.jpg"),
])
def test_urls_are_sent_as_a_browser_writes_them(url, sent):
    from curate.download.safety import browser_url

    assert browser_url(url) == sent


def test_content_decoding_and_its_limits():
    import gzip
    import zlib

    from curate.download.safety import ACCEPT_ENCODING, BodyLimitError, decode_content

    data = bytes(range(256)) * 40
    assert "gzip" in ACCEPT_ENCODING and "deflate" in ACCEPT_ENCODING
    assert decode_content(gzip.compress(data), "gzip", 10**6) == data
    assert decode_content(gzip.compress(data[:100]) + gzip.compress(data[100:]), "x-gzip", 10**6) == data
    assert decode_content(gzip.compress(data) + b"\0\0\0", "GZIP", 10**6) == data  # trailing padding
    assert decode_content(zlib.compress(data), "deflate", 10**6) == data
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    assert decode_content(raw.compress(data) + raw.flush(), "deflate", 10**6) == data
    assert decode_content(gzip.compress(zlib.compress(data)), "deflate, gzip", 10**6) == data
    assert decode_content(data, "identity", 10**6) == data and decode_content(data, None, 10) == data
    with pytest.raises(BodyLimitError, match="too large: decoded body over 1000 bytes"):
        decode_content(gzip.compress(b"\0" * 10**6), "gzip", 1000)  # a gzip bomb stops at the limit
    with pytest.raises(BodyLimitError, match="corrupt content encoding gzip"):
        decode_content(gzip.compress(data)[:-30], "gzip", 10**6)
    with pytest.raises(BodyLimitError, match="unsupported content encoding 'compress'"):
        decode_content(data, "compress", 10**6)


def test_brotli_and_zstd_bodies_are_decoded_under_the_limit(monkeypatch):
    """br and zstd (the test extra installs brotli and zstandard) stop near the limit, as gzip
    does, instead of expanding a bomb whole and checking its size after; a brotli without an
    output bound is not offered."""
    import brotli
    import zstandard

    from curate.download import response_body
    from curate.download.safety import ACCEPT_ENCODING, BodyLimitError, decode_content

    data = bytes(range(256)) * 40
    z = zstandard.ZstdCompressor()
    assert "br" in ACCEPT_ENCODING and "zstd" in ACCEPT_ENCODING
    assert decode_content(brotli.compress(data), "br", 10**6) == data
    assert decode_content(z.compress(data), "zstd", 10**6) == data
    assert decode_content(z.compress(data[:100]) + z.compress(data[100:]) + b"\0\0", "zstd", 10**6) == data
    assert decode_content(brotli.compress(z.compress(data)), "zstd, br", 10**6) == data
    bombs = {"br": brotli.compress(b"\0" * 10**8), "zstd": z.compress(b"\0" * 10**8)}  # 0.1 GB from 158 / 3,071 bytes
    for coding, body in bombs.items():
        with pytest.raises(BodyLimitError, match="too large: decoded body over 1000 bytes"):
            decode_content(body, coding, 1000)
    for coding, body in {"br": brotli.compress(data)[:-3], "zstd": z.compress(data)[:-10]}.items():
        with pytest.raises(BodyLimitError, match=f"corrupt content encoding {coding}: compressed stream is incomplete"):
            decode_content(body, coding, 10**6)

    class Unbounded:  # brotli < 1.2: process(data) only
        def process(self, data):
            return b""

    monkeypatch.setattr(brotli, "Decompressor", Unbounded)
    assert response_body._bounded_brotli() is None


def test_a_malformed_allow_network_entry_is_a_one_line_error(tmp_path, capsys):
    from curate.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["download", str(tmp_path / "ds"), "--engine", "local", "--allow-network", "127.0.0.1:http"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--allow-network '127.0.0.1:http'" in err and "Traceback" not in err


def test_a_name_lookup_past_the_deadline_is_a_timeout():
    import time

    # a deadline already passed (earlier redirects used it up): no lookup of a name is started
    with pytest.raises(TimeoutError, match="timed out: no time left to resolve localhost"):
        FetchPolicy(allow_private=True).resolve("localhost", 80, deadline=time.monotonic() - 1)
    assert FetchPolicy(allow_private=True).resolve("127.0.0.1", 80, deadline=time.monotonic() - 1)
    assert FetchPolicy(allow_private=True).resolve("localhost", 80, deadline=time.monotonic() + 30)


def test_store_url_rules():
    """Which URLs are store URLs, and which of them an ``--allow-store-prefix`` list allows:
    folder boundaries, scheme spellings (``gcs``/``gs``, ``s3a``/``s3``, any case) and ``..``."""
    from curate.download.store_urls import is_store_url, store_prefix, store_url_problem
    from curate.errors import CurateError

    allowed = [store_prefix(p) for p in ("s3://b/imgs", "gcs://c/", "az://d/x/")]
    assert allowed == ["s3://b/imgs/", "gs://c/", "az://d/x/"]
    for url in ("s3://b/imgs/0.jpg", "S3://b/imgs/a b.jpg", "s3a://b/imgs/sub/1.png", "gs://c/any.jpg",
                "gcs://c/k.jpg", "az://d/x/y.jpg"):
        assert is_store_url(url, allowed) and store_url_problem(url, allowed) is None, url
    for url in ("s3://b/imgs2/0.jpg", "s3://b/other.jpg", "s3://bb/imgs/0.jpg", "hdfs://nn/imgs/0.jpg",
                "az://d/y.jpg"):
        assert is_store_url(url, allowed) and "not under an --allow-store-prefix" in store_url_problem(url, allowed)
    assert "'..'" in store_url_problem("s3://b/imgs/../secret.jpg", allowed)
    assert "'..'" in store_url_problem("s3://b/imgs/./0.jpg", allowed)
    for url in ("http://h/a.jpg", "https://h/a.jpg", "ftp://h/a.jpg", "file:///p/a.jpg", "data:image/png;base64,"):
        assert not is_store_url(url, allowed), url  # left to urllib: refused there unless http(s) or allowed file://
    assert is_store_url("az://d/x/y.jpg", allowed) and not is_store_url("az://d/x/y.jpg", [])
    for bad, why in (("imgs/", "not an object-store folder"), ("https://h/imgs/", "not an object-store folder"),
                     ("s3:///imgs", "name a bucket"), ("s3://b/a/../c", "no '.' or '..'")):
        with pytest.raises(CurateError, match=why):
            store_prefix(bad)
    with pytest.raises(CurateError, match="not an object-store folder"):
        FetchPolicy(allow_store_prefixes=["/data/imgs"]).check()


@pytest.mark.parametrize("timeout, max_seconds, named", [(0.4, 30, "no data for 0.4s (--timeout)"),
                                                         (5, 0.6, "not complete after 0.6s (--max-seconds)")])
def test_a_silent_server_times_out_naming_the_limit_that_ran_out(timeout, max_seconds, named):
    """A server that accepts and never answers: the error names --timeout (one socket wait)
    or --max-seconds (the whole request), not the socket's bare "timed out"."""
    import socket
    import urllib.error

    from curate.download.safety import build_opener

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/x.jpg"
        opener = build_opener(FetchPolicy(allow_networks=["127.0.0.1/32"], max_seconds=max_seconds))
        with pytest.raises((TimeoutError, urllib.error.URLError)) as e:
            opener.open(url, timeout=timeout)
    assert named in str(e.value) and classify_error(str(e.value)) == "timeout"


@pytest.mark.parametrize("message, cls", [
    ("not an image (content starts with b'timed out, pleas')", "not_an_image"),
    ("not an image (content starts with b'blocked address ')", "not_an_image"),
    ("not an image (content starts with b'HTTP Error 404 x')", "not_an_image"),
    ("HTTP Error 404: blocked address", "http_404"),
    ("HTTP Error 503: timed out", "http_error"),
    ("<urlopen error file not on local host>", "unsupported_url"),
])
def test_what_a_server_wrote_does_not_decide_the_error_class(message, cls):
    assert classify_error(message) == cls


@pytest.mark.parametrize("url, why", [
    ("http://127.0.0.1:83617/x.jpg", "bad port '83617'"),  # the resolver would dial 83617 - 65536
    ("http://127.0.0.1:0/x.jpg", "bad port '0'"),
    ("http://127.0.0.1:80:80/x.jpg", "bad port '80:80'"),
    ("http://[::1]:70000/x.jpg", "bad port '70000'"),
    ("http://user:pass@127.0.0.1/x.jpg", "credentials in the url"),
    ("http://:8080/x.jpg", "no host"),  # a lookup of "" failed as a transient connection_error
    ("http://a..b/x.jpg", "invalid host name 'a..b'"),
    ("http://" + "a" * 64 + ".test/x.jpg", "invalid host name"),
])
def test_a_url_a_browser_would_not_fetch_is_unsupported(url, why):
    from curate.download.safety import browser_url

    with pytest.raises(ValueError, match=why) as e:
        browser_url(url)
    assert classify_error(str(e.value)) == "unsupported_url"


def test_file_urls_are_held_to_the_limits_and_read_regular_files_only(tmp_path):
    """--allow-file-urls: a file over --max-bytes is too large (file:// had no limit: /dev/zero
    filled memory); a device, a FIFO or a folder is refused before it is opened (a FIFO
    blocked forever)."""
    import os
    import urllib.error

    from curate.download.safety import build_opener

    opener = build_opener(FetchPolicy(allow_file_urls=True, max_bytes=1_000_000, max_seconds=5))
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 1_000_001)
    with pytest.raises(Exception, match="too large: Content-Length 1000001 over 1000000 bytes") as e:
        opener.open(f"file://{big}", timeout=2).read()
    assert classify_error(str(e.value)) == "too_large"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", fifo, tmp_path):
        with pytest.raises(urllib.error.URLError, match="is not a regular file") as e:
            opener.open(f"file://{path}", timeout=2)
        assert classify_error(str(e.value)) == "missing_object"
    ok = tmp_path / "ok.bin"
    ok.write_bytes(b"x" * 10)
    assert opener.open(f"file://{ok}", timeout=2).read() == b"x" * 10
    refused = build_opener(FetchPolicy())  # without the flag: refused by name, nothing read
    with pytest.raises(urllib.error.URLError, match="blocked file URL: .* is read only with --allow-file-urls") as e:
        refused.open(f"file://{ok}", timeout=2)
    assert classify_error(str(e.value)) == "blocked_file_url"


def test_an_image_folder_download_names_the_file_url_flag(tmp_path, capsys):
    """An image folder ingests as file:// URLs; downloading it without --allow-file-urls fails
    every row as blocked_file_url and the summary says which flag reads them."""
    from PIL import Image

    from curate.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(folder / f"p{i}.jpg")
        (folder / f"p{i}.txt").write_text(f"a blue picture number {i}")
    ds = tmp_path / "ds"
    for args in (["ingest", str(folder), "-o", str(ds)], ["download", str(ds)],
                 ["download", str(ds), "--retry-failed", "--allow-file-urls"]):
        with pytest.raises(SystemExit) as e:
            main([*args, "--engine", "local"])
        assert e.value.code == 0
    out = capsys.readouterr()
    assert '"blocked_file_url": 3' in out.out + out.err
    assert "3 rows name local files (file://" in out.err and "--retry-failed --allow-file-urls" in out.err
    assert "download: 3 success, 0 failed of 3 samples" in out.out + out.err


@pytest.mark.parametrize("field, value, named", [
    ("timeout", 0, "--timeout"), ("timeout", -1, "--timeout"), ("retries", -3, "--retries"),
    ("max_image_area", 0, "--max-image-area"), ("max_aspect_ratio", 0.5, "--max-aspect-ratio"),
    ("encode_quality", 500, "--encode-quality"), ("processes_count", -2, "--processes"),
])
def test_download_options_that_would_fail_every_row_are_refused(field, value, named):
    from curate.download import DownloadOptions
    from curate.errors import CurateError

    with pytest.raises(CurateError, match=named):
        DownloadOptions(**{field: value}).check()
    DownloadOptions().check()


def test_png_gets_a_compression_level_not_a_jpeg_quality():
    """--encode-format png alone failed in img2dataset's Resizer (quality 95 is no zlib level)
    with a 55-line traceback."""
    from curate.download import DownloadOptions
    from curate.errors import CurateError

    assert DownloadOptions(encode_format="png").encode_quality == 6
    assert DownloadOptions().encode_quality == DownloadOptions(encode_format="webp").encode_quality == 95
    with pytest.raises(CurateError, match="between 0 and 9 for png, got 50"):
        DownloadOptions(encode_format="png", encode_quality=50).check()
    DownloadOptions(encode_format="png", encode_quality=9).check()


def test_a_run_manifest_is_strict_json_with_an_infinite_default(tmp_path):
    import json
    import math

    from curate.manifest import RunManifest
    from curate.tables import Dataset

    ds = Dataset(tmp_path / "ds")
    path = RunManifest("download", {"max_aspect_ratio": math.inf, "x": [float("nan")]}).write(ds)
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["params"]["max_aspect_ratio"] == "inf" and data["params"]["x"] == ["nan"]


def test_max_image_area_decides_not_pillows_own_limit():
    """An area allowed by --max-image-area above Pillow's bomb threshold (179 M pixels refused
    by Pillow as it opens) reaches curate's check, and a refusal names the option."""
    import io

    from PIL import Image

    from curate.download.fetch import SafeResizer

    before = Image.MAX_IMAGE_PIXELS
    try:
        im = Image.new("1", (15000, 15000))  # 225 M pixels, 27 KB as a PNG
        buf = io.BytesIO()
        im.save(buf, "PNG")
        small = SafeResizer(image_size=64, resize_mode="keep_ratio", resize_only_if_bigger=True,
                            encode_quality=95, encode_format="jpg", skip_reencode=True, min_image_size=0,
                            max_image_area=100_000_000, max_aspect_ratio=float("inf"))
        assert "over --max-image-area 100000000" in small(io.BytesIO(buf.getvalue()))[-1]
        SafeResizer(image_size=64, resize_mode="keep_ratio", resize_only_if_bigger=True, encode_quality=95,
                    encode_format="jpg", skip_reencode=True, min_image_size=0, max_image_area=500_000_000,
                    max_aspect_ratio=float("inf"))
        assert Image.MAX_IMAGE_PIXELS == 500_000_000  # Pillow refuses only past twice the option
        with Image.open(io.BytesIO(buf.getvalue())) as opened:  # no DecompressionBombError
            assert opened.size == (15000, 15000)
    finally:
        Image.MAX_IMAGE_PIXELS = before


def test_a_killed_tasks_shard_file_is_removed_by_the_next_one(tmp_path):
    import os
    import subprocess
    import sys

    from curate.download.fetch import SHARD_FILE_PREFIX, _host_tag, remove_stale_shard_files

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    gone = tmp_path / f"{SHARD_FILE_PREFIX}{_host_tag()}-{dead.stdout.strip()}-abc.feather"
    mine = tmp_path / f"{SHARD_FILE_PREFIX}{_host_tag()}-{os.getpid()}-def.feather"
    other_host = tmp_path / f"{SHARD_FILE_PREFIX}00000000-{dead.stdout.strip()}-ghi.feather"
    for p in (gone, mine, other_host):
        p.write_bytes(b"x")
    assert remove_stale_shard_files(str(tmp_path)) == [str(gone)]
    assert mine.exists() and other_host.exists() and not gone.exists()
