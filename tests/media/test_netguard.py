"""The outbound path refuses internal addresses before connecting, and caps what it reads.

Proof of "no connection made" is twofold: a real listening socket on the loopback port the URL
names sees no connection, and a spy on ``socket.create_connection`` (the call httpcore connects
with) sees no attempt at all.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from reelserve.errors import ErrorKind, OutboundBlockedError
from reelserve.media import netguard
from reelserve.media.netguard import OutboundPolicy, check_url, fetch, request
from reelserve.settings import Settings

# --------------------------------------------------------------------------------------------
# Real local endpoints
# --------------------------------------------------------------------------------------------


class Listener:
    """A raw TCP listener that records every connection it accepts."""

    def __init__(self, host: str = "127.0.0.1", family: int = socket.AF_INET) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Server:
    """A real HTTP server on a loopback address with per-path behaviours."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        outer = self
        self.requests: list[dict[str, Any]] = []
        self.sent_bytes = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                return body

            def _send(
                self, status: int, body: bytes, ctype: str = "text/plain", **extra: str
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k.replace("_", "-"), v)
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:
                body = self._record()
                self._send(201, b"stored " + str(len(body)).encode())

            do_POST = do_PUT

            def do_GET(self) -> None:
                self._record()
                path = self.path
                if path == "/ok":
                    self._send(200, b"\x89PNG fake", "image/png; charset=binary")
                elif path.startswith("/redirect?to="):
                    self._send(302, b"", Location=path.split("=", 1)[1])
                elif path == "/loop":
                    self._send(302, b"", Location="/loop")
                elif path == "/missing":
                    self._send(404, b"nope")
                elif path in ("/huge", "/huge-chunked"):
                    self._stream_huge(declared=path == "/huge")
                elif path == "/redirect-huge":
                    self._stream_huge(declared=True, status=302, Location="/ok")
                elif path == "/hang":
                    time.sleep(3)
                    self._send(200, b"late")
                elif path == "/drip":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    try:
                        for _ in range(1000):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass
                else:
                    self._send(200, b"hello")

            def _stream_huge(self, *, declared: bool, status: int = 200, **extra: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "video/mp4")
                for k, v in extra.items():
                    self.send_header(k, v)
                if declared:
                    self.send_header("Content-Length", str(1 << 30))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"\0" * 65536
                try:
                    while outer.sent_bytes < (1 << 30):
                        if declared:
                            self.wfile.write(chunk)
                        else:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        outer.sent_bytes += len(chunk)
                except OSError:
                    pass  # the client hung up: what we want

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients hanging up mid-body is what several tests do on purpose

        self.httpd = Quiet((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def connect_spy(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every outbound TCP connection attempt (and still make it)."""
    attempts: list[Any] = []
    real = socket.create_connection

    def spy(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return attempts


STRICT = OutboundPolicy(connect_timeout=1.0, read_timeout=1.0, total_timeout=5.0)
LOCAL = OutboundPolicy(
    allow=("127.0.0.1",), connect_timeout=1.0, read_timeout=1.0, total_timeout=5.0
)


# --------------------------------------------------------------------------------------------
# Refusals, with no connection made
# --------------------------------------------------------------------------------------------

LOOPBACK_FORMS = [
    "127.0.0.1",
    "localhost",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "0.0.0.0",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "0x7f.1",
    "127.0.0.1.",
]


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
def test_loopback_forms_refused_without_connecting(
    host: str, listener: Listener, connect_spy: list[Any]
) -> None:
    url = f"http://{host}:{listener.port}/secret"
    with pytest.raises(OutboundBlockedError) as info:
        fetch(url, max_bytes=1000, policy=STRICT)
    err = info.value
    assert err.code == "blockedAddress"
    assert "loopback" in err.message or "unspecified" in err.message  # says why
    assert str(listener.port) in err.message  # names the URL
    time.sleep(0.1)
    assert listener.connections == 0
    assert connect_spy == []


def test_ipv6_loopback_refused_without_connecting(connect_spy: list[Any]) -> None:
    try:
        lst = Listener("::1", socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        with pytest.raises(OutboundBlockedError) as info:
            fetch(f"http://[::1]:{lst.port}/", max_bytes=10, policy=STRICT)
        assert info.value.code == "blockedAddress"
        assert "loopback" in info.value.message
        time.sleep(0.1)
        assert lst.connections == 0
        assert connect_spy == []
    finally:
        lst.close()


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("[fd00:ec2::254]", "cloud metadata"),
        ("[fc00::1]", "unique local"),
        ("[fe80::1]", "link-local"),
        ("[ff02::1]", "multicast"),
        ("[::]", "unspecified"),
        ("[::ffff:10.0.0.1]", "IPv4-mapped form of 10.0.0.1"),
        ("[::ffff:169.254.169.254]", "cloud metadata"),
        ("[64:ff9b::a9fe:a9fe]", "NAT64 form of 169.254.169.254"),
        ("[2002:a00:1::]", "6to4 form of 10.0.0.1"),
        ("[::127.0.0.1]", "IPv4-compatible"),
        ("[2001::1]", "Teredo"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("012.0.0.1", "10.0.0.1"),
        ("167772161", "10.0.0.1"),
    ],
)
def test_internal_addresses_refused(host: str, why: str, connect_spy: list[Any]) -> None:
    with pytest.raises(OutboundBlockedError) as info:
        fetch(f"http://{host}/latest/meta-data/", max_bytes=1000, policy=STRICT)
    assert info.value.code == "blockedAddress"
    assert why in info.value.message
    with pytest.raises(OutboundBlockedError):
        request("POST", f"https://{host}/hook", content=b"{}", policy=STRICT)
    assert connect_spy == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://example.com/", "scheme 'gopher'"),
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("//example.com/x", "scheme '(none)'"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com@127.0.0.1/", "credentials"),
        ("http://example.com\\@127.0.0.1/", "'\\'"),
        ("http://exa mple.com/", "whitespace"),
        ("http:///nohost", "no host"),
        ("http://[::1%25lo]/", "zone"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://0x08080808/", "write it as 8.8.8.8"),
        ("http://1.2.3.4.5/", "not a valid IPv4"),
        ("http://08.0.0.1/", "not a valid IPv4"),
        ("http://exa_$mple.com/", "not a valid name"),
        ("", "empty URL"),
    ],
)
def test_bad_urls_refused(url: str, fragment: str, connect_spy: list[Any]) -> None:
    with pytest.raises(OutboundBlockedError) as info:
        fetch(url, max_bytes=10, policy=STRICT, parameter="inputs.video")
    assert info.value.code == "invalidURL"
    assert fragment in info.value.message
    assert info.value.parameter == "inputs.video"
    assert connect_spy == []


def test_name_resolving_to_loopback_refused(listener: Listener, connect_spy: list[Any]) -> None:
    calls: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return {"evil.test": ["93.184.216.34", "127.0.0.1"], "rebind.test": ["::1"]}[host]

    policy = OutboundPolicy(resolver=resolver, connect_timeout=1.0)
    for name, addr in (("evil.test", "127.0.0.1"), ("rebind.test", "::1")):
        with pytest.raises(OutboundBlockedError) as info:
            fetch(f"http://{name}:{listener.port}/", max_bytes=10, policy=policy)
        assert info.value.code == "blockedAddress"
        assert f"resolves to {addr}" in info.value.message
    assert calls == [("evil.test", listener.port), ("rebind.test", listener.port)]
    assert listener.connections == 0
    assert connect_spy == []


def test_redirect_to_loopback_refused(server: Server, connect_spy: list[Any]) -> None:
    # 127.0.0.2 is another loopback address: only 127.0.0.1 is allowed, so the hop is refused.
    target = Listener("127.0.0.2")
    try:
        for to in (
            f"http://127.0.0.2:{target.port}/",
            f"http://[::ffff:127.0.0.2]:{target.port}/",
            "http://169.254.169.254/latest/meta-data/",
            f"http://2130706434:{target.port}/",
        ):
            with pytest.raises(OutboundBlockedError) as info:
                fetch(
                    f"http://127.0.0.1:{server.port}/redirect?to={to}", max_bytes=100, policy=LOCAL
                )
            assert info.value.code == "blockedAddress", to
        time.sleep(0.1)
        assert target.connections == 0
        assert {a[0] for a in connect_spy} == {"127.0.0.1"}
    finally:
        target.close()


def test_redirects_are_limited(server: Server) -> None:
    with pytest.raises(OutboundBlockedError) as info:
        fetch(f"http://127.0.0.1:{server.port}/loop", max_bytes=100, policy=LOCAL)
    assert info.value.code == "tooManyRedirects"
    assert len(server.requests) == LOCAL.max_redirects + 1


# --------------------------------------------------------------------------------------------
# What the allow list lets through, and how
# --------------------------------------------------------------------------------------------


def test_allow_list_reaches_a_real_local_server(server: Server) -> None:
    got = fetch(f"http://127.0.0.1:{server.port}/ok", max_bytes=1000, policy=LOCAL)
    assert got.content == b"\x89PNG fake"
    assert got.content_type == "image/png"
    assert got.final_url == f"http://127.0.0.1:{server.port}/ok"
    # a redirect within the allowed set is followed; final_url is the last hop
    got = fetch(f"http://127.0.0.1:{server.port}/redirect?to=/ok", max_bytes=1000, policy=LOCAL)
    assert got.content == b"\x89PNG fake"
    assert got.final_url.endswith("/ok")


def test_allow_list_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELSERVE_OUTBOUND_ALLOW", "127.0.0.1, 10.0.0.0/8,media.internal")
    policy = OutboundPolicy.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    assert policy.allow == ("127.0.0.1", "10.0.0.0/8", "media.internal")
    assert check_url("http://10.2.3.4/x", policy=policy) == "http://10.2.3.4/x"
    assert policy.host_allowed("MEDIA.internal.")
    # a CIDR never opens the metadata endpoint; only the exact address would
    wide = OutboundPolicy(allow=("169.254.0.0/16",))
    with pytest.raises(OutboundBlockedError, match="cloud metadata"):
        check_url("http://169.254.169.254/", policy=wide)
    assert check_url("http://169.254.1.1/", policy=wide)
    with pytest.raises(ValueError, match="neither a host name"):
        OutboundPolicy(allow=("not a host!",))


def test_connects_to_the_vetted_address_with_the_original_host(server: Server) -> None:
    """The name is resolved once; the request goes to that IP, Host keeps the name."""
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    policy = OutboundPolicy(allow=("127.0.0.1",), resolver=resolver)
    got = fetch(f"http://rebind.test:{server.port}/ok", max_bytes=100, policy=policy)
    assert got.content == b"\x89PNG fake"
    assert calls == ["rebind.test"]  # the system resolver (which does not know it) is never asked
    assert server.requests[-1]["headers"]["Host"] == f"rebind.test:{server.port}"


def test_request_returns_status_and_sends_body(server: Server) -> None:
    resp = request(
        "PUT",
        f"http://127.0.0.1:{server.port}/upload?sig=abc",
        policy=LOCAL,
        content=b"\x00\x01video",
        headers={"Content-Type": "video/mp4", "Host": "ignored.example"},
    )
    assert resp.status == 201 and resp.ok
    assert resp.body == b"stored 7"
    sent = server.requests[-1]
    assert sent["method"] == "PUT" and sent["path"] == "/upload?sig=abc"
    assert sent["body"] == b"\x00\x01video"
    assert sent["headers"]["Content-Type"] == "video/mp4"
    assert sent["headers"]["Host"] == f"127.0.0.1:{server.port}"  # a caller cannot forge Host
    resp = request("GET", f"http://127.0.0.1:{server.port}/missing", policy=LOCAL)
    assert resp.status == 404 and not resp.ok


def test_non_2xx_fetch_fails(server: Server) -> None:
    with pytest.raises(OutboundBlockedError) as info:
        fetch(f"http://127.0.0.1:{server.port}/missing", max_bytes=100, policy=LOCAL)
    assert info.value.code == "fetchFailed"
    assert "HTTP 404" in info.value.message


def test_connection_refused_is_fetch_failed(listener: Listener) -> None:
    port = listener.port
    listener.close()  # nothing listens there any more
    with pytest.raises(OutboundBlockedError) as info:
        fetch(f"http://127.0.0.1:{port}/", max_bytes=100, policy=LOCAL)
    assert info.value.code == "fetchFailed"


# --------------------------------------------------------------------------------------------
# Byte cap and timeouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/huge", "/huge-chunked"])
def test_one_gigabyte_refused_after_the_cap(server: Server, path: str) -> None:
    cap = 4 * 1024 * 1024
    started = time.monotonic()
    with pytest.raises(OutboundBlockedError) as info:
        fetch(f"http://127.0.0.1:{server.port}{path}", max_bytes=cap, policy=LOCAL)
    elapsed = time.monotonic() - started
    assert info.value.code == "mediaTooLarge"
    assert info.value.kind is ErrorKind.TOO_LARGE
    assert info.value.http_status == 413
    assert str(cap) in info.value.message
    time.sleep(0.2)
    # The server stops on a broken pipe; what it pushed is the cap plus socket buffers.
    assert server.sent_bytes < 64 * 1024 * 1024
    assert elapsed < 5


def test_request_body_truncated_not_refused(server: Server) -> None:
    resp = request(
        "GET", f"http://127.0.0.1:{server.port}/huge-chunked", policy=LOCAL, max_bytes=1000
    )
    assert resp.truncated and len(resp.body) == 1000


def test_read_timeout(server: Server) -> None:
    policy = OutboundPolicy(allow=("127.0.0.1",), read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(OutboundBlockedError) as info:
        fetch(f"http://127.0.0.1:{server.port}/hang", max_bytes=100, policy=policy)
    assert info.value.code == "fetchTimeout"
    assert info.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 2


def test_total_timeout_stops_a_slow_drip(server: Server) -> None:
    policy = OutboundPolicy(allow=("127.0.0.1",), read_timeout=1.0, total_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(OutboundBlockedError) as info:
        fetch(f"http://127.0.0.1:{server.port}/drip", max_bytes=10_000, policy=policy)
    assert info.value.code == "fetchTimeout"
    assert time.monotonic() - started < 2


def test_connect_timeout() -> None:
    """A listener whose accept queue is full never completes the handshake."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    try:
        # Fill the backlog so further SYNs are dropped (Linux keeps backlog+1 pending).
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        policy = OutboundPolicy(allow=("127.0.0.1",), connect_timeout=0.3, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(OutboundBlockedError) as info:
            fetch(f"http://127.0.0.1:{port}/", max_bytes=10, policy=policy)
        assert info.value.code in ("fetchTimeout",)
        assert time.monotonic() - started < 2
    finally:
        for s in fillers:
            s.close()
        sock.close()


# --------------------------------------------------------------------------------------------
# TLS: SNI and certificate checked against the name while connecting to the vetted IP
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=media.test",
            "-addext",
            "subjectAltName=DNS:media.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    srv = Server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    ctx.sni_callback = lambda sock, name, c: seen_sni.append(name)  # type: ignore[assignment,misc,func-returns-value]
    srv.httpd.socket = ctx.wrap_socket(srv.httpd.socket, server_side=True)
    srv.seen_sni = seen_sni  # type: ignore[attr-defined]
    yield srv.port, cert
    srv.close()


def test_tls_uses_sni_and_verifies_the_name(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    resolver = lambda host, port: ["127.0.0.1"]  # noqa: E731
    ctx = ssl.create_default_context(cafile=str(cert))
    policy = OutboundPolicy(allow=("127.0.0.1",), resolver=resolver, verify=ctx)
    got = fetch(f"https://media.test:{port}/ok", max_bytes=100, policy=policy)
    assert got.content == b"\x89PNG fake"
    # The certificate is for media.test: the same server reached under another name fails.
    with pytest.raises(OutboundBlockedError) as info:
        fetch(f"https://other.test:{port}/ok", max_bytes=100, policy=policy)
    assert info.value.code == "fetchFailed"


async def test_async_wrappers(server: Server) -> None:
    got = await netguard.afetch(f"http://127.0.0.1:{server.port}/ok", max_bytes=100, policy=LOCAL)
    assert got.content == b"\x89PNG fake"
    resp = await netguard.arequest(
        "POST", f"http://127.0.0.1:{server.port}/h", policy=LOCAL, content=b"{}"
    )
    assert resp.status == 201


def test_import_is_light() -> None:
    code = "import sys, reelserve.media.netguard; print(sorted({'httpx','torch','av'} & set(sys.modules)))"
    out = subprocess.run(
        [__import__("sys").executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Redirects: httpx follows them, every hop passes through the vetting transport
# --------------------------------------------------------------------------------------------


def test_each_redirect_hop_is_resolved_vetted_and_pinned(
    server: Server, connect_spy: list[Any]
) -> None:
    other = Server()
    try:
        calls: list[tuple[str, int]] = []

        def resolver(host: str, port: int) -> list[str]:
            calls.append((host, port))
            return ["127.0.0.1"]

        policy = OutboundPolicy(allow=("127.0.0.1",), resolver=resolver, connect_timeout=1.0)
        to = f"http://second.test:{other.port}/ok"
        got = fetch(
            f"http://first.test:{server.port}/redirect?to={to}", max_bytes=100, policy=policy
        )
        assert got.content == b"\x89PNG fake"
        assert got.final_url == to
        # one resolution per hop, each name resolved by the policy's resolver only
        assert calls == [("first.test", server.port), ("second.test", other.port)]
        # each hop connected to the vetted IP while Host kept the name
        assert server.requests[-1]["headers"]["Host"] == f"first.test:{server.port}"
        assert other.requests[-1]["headers"]["Host"] == f"second.test:{other.port}"
        assert connect_spy == [("127.0.0.1", server.port), ("127.0.0.1", other.port)]
    finally:
        other.close()


def test_redirect_to_a_name_resolving_to_loopback_never_connects(
    server: Server, connect_spy: list[Any]
) -> None:
    target = Listener("127.0.0.2")
    try:
        policy = OutboundPolicy(
            allow=("127.0.0.1",),
            resolver=lambda host, port: {"inside.test": ["127.0.0.2"]}[host],
            connect_timeout=1.0,
        )
        with pytest.raises(OutboundBlockedError) as info:
            fetch(
                f"http://127.0.0.1:{server.port}/redirect?to=http://inside.test:{target.port}/",
                max_bytes=100,
                policy=policy,
                parameter="inputs.video",
            )
        assert info.value.code == "blockedAddress"
        assert "resolves to 127.0.0.2" in info.value.message
        assert info.value.parameter == "inputs.video"  # a hop's refusal still names the field
        time.sleep(0.1)
        assert target.connections == 0
        assert connect_spy == [("127.0.0.1", server.port)]
    finally:
        target.close()


@pytest.mark.parametrize("host", ["0177.0.0.2", "0x7f.2", "127.2"])
def test_redirect_to_an_encoded_loopback_form_is_blocked(
    server: Server, host: str, connect_spy: list[Any]
) -> None:
    # httpx's own parser rejects some of these forms; the guard names them first.
    with pytest.raises(OutboundBlockedError) as info:
        fetch(
            f"http://127.0.0.1:{server.port}/redirect?to=http://{host}/",
            max_bytes=100,
            policy=LOCAL,
        )
    assert info.value.code == "blockedAddress"
    assert "127.0.0.2" in info.value.message
    assert {a[0] for a in connect_spy} == {"127.0.0.1"}


def test_redirect_body_is_never_read(server: Server) -> None:
    """A 302 carrying a 1 GB body: httpx would read it into memory; the transport drops it."""
    started = time.monotonic()
    got = fetch(f"http://127.0.0.1:{server.port}/redirect-huge", max_bytes=100, policy=LOCAL)
    assert got.content == b"\x89PNG fake"
    # not following: the redirect itself comes back, without its body
    resp = request("GET", f"http://127.0.0.1:{server.port}/redirect-huge", policy=LOCAL)
    assert resp.status == 302 and resp.body == b"" and resp.headers["location"] == "/ok"
    time.sleep(0.2)
    assert server.sent_bytes < 64 * 1024 * 1024
    assert time.monotonic() - started < 5


def test_guarded_client_is_a_plain_httpx_client(server: Server, connect_spy: list[Any]) -> None:
    from reelserve.media.netguard.transport import guarded_client

    with guarded_client(STRICT) as client, pytest.raises(OutboundBlockedError) as info:
        client.get(f"http://127.0.0.1:{server.port}/ok")
    assert info.value.code == "blockedAddress"
    assert connect_spy == []
    with guarded_client(LOCAL, follow_redirects=True) as client:
        resp = client.get(f"http://127.0.0.1:{server.port}/redirect?to=/ok")
    assert resp.status_code == 200 and resp.content == b"\x89PNG fake"
    assert [r.status_code for r in resp.history] == [302]


def test_pinning_backend_connects_only_to_pinned_addresses(
    listener: Listener, connect_spy: list[Any]
) -> None:
    """Below the transport, fail closed: a host nobody vetted gets no socket at all."""
    import httpcore

    from reelserve.media.netguard.transport import _PinningBackend

    with pytest.raises(httpcore.ConnectError, match="not vetted"):
        _PinningBackend({}).connect_tcp("127.0.0.1", listener.port, timeout=1.0)
    assert connect_spy == []
    pinned = _PinningBackend({("name.test", listener.port): ("127.0.0.1",)})
    pinned.connect_tcp("name.test", listener.port, timeout=1.0).close()
    assert connect_spy == [("127.0.0.1", listener.port)]


# --------------------------------------------------------------------------------------------
# httpx.MockTransport under the guard: the logic above the socket, every hop still vetted
# --------------------------------------------------------------------------------------------

PUBLIC_DNS = {
    "media.example": ["93.184.216.34"],
    "cdn.example": ["93.184.216.35", "2606:2800:220:1:248:1893:25c8:1946"],
    "inside.example": ["93.184.216.36", "10.0.0.5"],
}


def _mock_policy(calls: list[str]) -> OutboundPolicy:
    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return PUBLIC_DNS[host]

    return OutboundPolicy(resolver=resolver, total_timeout=5.0)


def test_mock_transport_sees_each_hop_after_it_is_vetted(connect_spy: list[Any]) -> None:
    import httpx

    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.path == "/start":
            return httpx.Response(303, headers={"Location": "https://cdn.example/final?x=1"})
        return httpx.Response(200, content=b"done", headers={"Content-Type": "video/mp4"})

    calls: list[str] = []
    resp = request(
        "POST",
        "http://media.example/start",
        policy=_mock_policy(calls),
        content=b'{"a":1}',
        headers={"Authorization": "Bearer s3cret", "Content-Type": "application/json"},
        follow_redirects=True,
        transport=httpx.MockTransport(handler),
    )
    assert resp.status == 200 and resp.body == b"done"
    assert resp.url == "https://cdn.example/final?x=1"
    assert calls == ["media.example", "cdn.example"]
    assert [(r.method, str(r.url)) for r in seen] == [
        ("POST", "http://media.example/start"),
        ("GET", "https://cdn.example/final?x=1"),
    ]
    assert seen[0].content == b'{"a":1}' and seen[0].headers["authorization"] == "Bearer s3cret"
    # 303 turns the POST into a bodyless GET; another origin gets no credentials
    assert seen[1].content == b"" and "authorization" not in seen[1].headers
    assert all(r.headers["accept-encoding"] == "identity" for r in seen)
    assert connect_spy == []


def test_mock_redirect_to_an_internal_name_never_reaches_the_transport() -> None:
    import httpx

    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        return httpx.Response(302, headers={"Location": "http://inside.example/admin"})

    calls: list[str] = []
    with pytest.raises(OutboundBlockedError) as info:
        fetch(
            "http://media.example/a",
            max_bytes=100,
            policy=_mock_policy(calls),
            parameter="inputs.image",
            transport=httpx.MockTransport(handler),
        )
    assert info.value.code == "blockedAddress"
    assert "resolves to 10.0.0.5" in info.value.message  # one bad answer refuses the name
    assert info.value.parameter == "inputs.image"
    assert calls == ["media.example", "inside.example"]
    assert seen == ["http://media.example/a"]


def test_mock_byte_cap_stops_pulling_the_stream() -> None:
    import httpx

    pulled: list[int] = []

    def gigabyte() -> Iterator[bytes]:
        for i in range(1 << 14):  # 16384 x 64 KiB = 1 GiB, no Content-Length
            pulled.append(i)
            yield b"\0" * 65536

    transport = httpx.MockTransport(lambda req: httpx.Response(200, content=gigabyte()))
    with pytest.raises(OutboundBlockedError) as info:
        fetch(
            "http://media.example/v.mp4",
            max_bytes=1_000_000,
            policy=_mock_policy([]),
            transport=transport,
        )
    assert info.value.code == "mediaTooLarge"
    assert len(pulled) == 1_000_000 // 65536 + 1  # stopped at the chunk that passed the cap


def test_mock_transport_errors_map_to_codes() -> None:
    import httpx

    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=req)

    def broken(req: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("garbage", request=req)

    for handler, code in ((slow, "fetchTimeout"), (broken, "fetchFailed")):
        with pytest.raises(OutboundBlockedError) as info:
            fetch(
                "http://media.example/x",
                max_bytes=10,
                policy=_mock_policy([]),
                transport=httpx.MockTransport(handler),
                parameter="inputs.video",
            )
        assert info.value.code == code
        assert info.value.parameter == "inputs.video"
        assert "media.example/x" in info.value.message
