"""SSRF guard and fetch error classes, against real servers on this machine.

Names like ``files.test`` are mapped by a fake resolver passed to the Fetcher
(the resolver the production code calls), never by /etc/hosts.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpcore
import pytest
from zopilot_worker.errors import FetchError, FetchRefused
from zopilot_worker.jobrunner.fetch import DocumentRef, Fetcher, redact_url
from zopilot_worker.jobrunner.netguard import AddressPolicy

FileServer = Any  # the conftest's loopback server (fixtures file_server, server_factory)


class FakeDns:
    """A resolver: name -> addresses (a list per call, to change answers); counts lookups."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        seen = self.answers[host]
        return seen[min(len(self.calls), len(seen)) - 1] if len(seen) > 1 else seen[0]


class RecordingBackend(httpcore.NetworkBackend):
    """Records where it is asked to connect and refuses: no packet leaves the machine."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connects.append((host, port))
        raise httpcore.ConnectError("refused by the test backend")


def ref(url: str) -> DocumentRef:
    return DocumentRef(redact_url(url), "a.txt", url, "url")


@pytest.fixture
def fetcher_factory() -> Iterator[Callable[..., Fetcher]]:
    made: list[Fetcher] = []

    def make(**overrides: Any) -> Fetcher:
        values: dict[str, Any] = {
            "max_bytes": 1 << 20,
            "timeout_s": 10.0,
            "attempts": 3,
            "backoff_s": 0.0,
        }
        values.update(overrides)
        fetcher = Fetcher(**values)
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


def _dns_for(server: FileServer) -> FakeDns:
    return FakeDns({"files.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})


# --- the address policy as a table ------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "default", "private_allowed"),
    [
        ("93.184.215.14", True, True),
        ("2606:4700:4700::1111", True, True),
        ("127.0.0.1", False, True),
        ("10.1.2.3", False, True),
        ("172.16.0.1", False, True),
        ("192.168.1.1", False, True),
        ("100.64.0.1", False, True),  # CGNAT
        ("::1", False, True),
        ("fd12:3456::1", False, True),  # unique-local
        ("fec0::1", False, True),  # site-local
        ("::ffff:127.0.0.1", False, True),  # IPv4-mapped loopback
        ("2002:7f00:1::1", False, True),  # 6to4 around 127.0.0.1
        ("169.254.169.254", False, False),  # cloud metadata
        ("169.254.1.1", False, False),  # link-local
        ("fe80::1", False, False),
        ("fd00:ec2::254", False, False),  # AWS metadata over IPv6
        ("100.100.100.200", False, False),  # Alibaba metadata
        ("192.0.0.192", False, False),  # Oracle metadata
        ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 around 169.254.169.254
        ("::ffff:169.254.169.254", False, False),
        ("0.0.0.0", False, False),
        ("::", False, False),
        ("224.0.0.1", False, False),  # multicast
        ("ff02::1", False, False),
        ("255.255.255.255", False, False),
        ("240.0.0.1", False, False),  # reserved
    ],
)
def test_address_policy(address: str, default: bool, private_allowed: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert (AddressPolicy().refusal(ip) is None) is default
    assert (AddressPolicy(allow_private=True).refusal(ip) is None) is private_allowed
    listed = AddressPolicy(private_hosts=("files.test",))
    assert (listed.refusal(ip, host="files.test") is None) is private_allowed
    assert (listed.refusal(ip, host="other.test") is None) is default


# --- scheme, redirects, names -------------------------------------------------------------


def test_https_only_by_default(file_server: FileServer, fetcher_factory: Any) -> None:
    (file_server.directory / "a.txt").write_text("hello")
    fetcher = fetcher_factory(policy=AddressPolicy(allow_private=True))
    with pytest.raises(FetchRefused, match="only https") as refused:
        fetcher.fetch(ref(f"{file_server.url}/files/a.txt"))
    assert "fetch_allow_http" in refused.value.public_message
    assert refused.value.retriable is False
    assert file_server.requests == []
    allowed = fetcher_factory(allow_http=True, policy=AddressPolicy(allow_private=True))
    assert allowed.fetch(ref(f"{file_server.url}/files/a.txt")).data == b"hello"


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/files/a.txt",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::ffff:127.0.0.1]:{port}/files/a.txt",
        "http://2130706433:{port}/files/a.txt",  # 127.0.0.1 as one decimal number
        "http://metadata.test/computeMetadata/v1/",  # a name for 169.254.169.254
        "http://rebind.test:{port}/files/a.txt",  # a name for loopback
    ],
)
def test_redirect_to_an_internal_address_is_refused(
    file_server: FileServer, fetcher_factory: Any, target: str
) -> None:
    """files.test (loopback) is trusted by name; where it redirects to is checked again."""
    (file_server.directory / "a.txt").write_text("secret")
    dns = FakeDns(
        {
            "files.test": [["127.0.0.1"]],
            "metadata.test": [["169.254.169.254"]],
            "rebind.test": [["127.0.0.1"]],
        }
    )
    fetcher = fetcher_factory(
        allow_http=True,
        policy=AddressPolicy(private_hosts=("files.test",)),
        resolver=dns,
    )
    to = target.format(port=file_server.port)
    url = f"http://files.test:{file_server.port}/redirect?to={to}"
    with pytest.raises(FetchRefused, match="refused to connect") as refused:
        fetcher.fetch(ref(url))
    assert refused.value.retriable is False
    assert file_server.requests == [f"/redirect?to={to}"]  # once: a refusal is not retried
    # The same redirect with loopback allowed outright still never reaches metadata.
    if "169.254" in to or "metadata" in to:
        everything = fetcher_factory(
            allow_http=True, policy=AddressPolicy(allow_private=True), resolver=dns
        )
        with pytest.raises(FetchRefused, match="metadata"):
            everything.fetch(ref(url))


def test_redirect_within_the_trusted_host_is_followed(
    file_server: FileServer, fetcher_factory: Any
) -> None:
    (file_server.directory / "a.txt").write_text("hello")
    fetcher = fetcher_factory(
        allow_http=True,
        policy=AddressPolicy(private_hosts=("files.test",)),
        resolver=_dns_for(file_server),
    )
    url = f"http://files.test:{file_server.port}/redirect?to=/files/a.txt"
    assert fetcher.fetch(ref(url)).data == b"hello"
    assert file_server.hosts == [f"files.test:{file_server.port}"] * 2


def test_a_name_resolving_to_a_private_address_is_refused_once(fetcher_factory: Any) -> None:
    dns = FakeDns({"evil.test": [["10.0.0.7"]], "mixed.test": [["93.184.215.14", "127.0.0.1"]]})
    inner = RecordingBackend()
    fetcher = fetcher_factory(resolver=dns, network_backend=inner)
    with pytest.raises(FetchRefused, match=r"evil\.test \(resolves to 10\.0\.0\.7\)"):
        fetcher.fetch(ref("https://evil.test/a.pdf"))
    # One public and one private address: the name is refused as a whole.
    with pytest.raises(FetchRefused, match=r"127\.0\.0\.1"):
        fetcher.fetch(ref("https://mixed.test/a.pdf"))
    assert dns.calls == ["evil.test", "mixed.test"]  # not retried
    assert inner.connects == []


def test_dns_rebinding_cannot_swap_the_address(fetcher_factory: Any) -> None:
    """The first answer is public, later ones loopback: the connection goes to the IP that
    was checked, there is no second lookup for the same connection."""
    dns = FakeDns({"rebind.test": [["93.184.215.14"], ["127.0.0.1"]]})
    inner = RecordingBackend()
    fetcher = fetcher_factory(resolver=dns, network_backend=inner, attempts=1)
    with pytest.raises(FetchError) as failed:
        fetcher.fetch(ref("https://rebind.test/a.pdf"))
    assert failed.value.retriable  # the (fake) connect failed: a network fault
    assert inner.connects == [("93.184.215.14", 443)]
    assert dns.calls == ["rebind.test"]
    # The next connection resolves again, gets loopback, and is refused before connecting.
    with pytest.raises(FetchRefused):
        fetcher.fetch(ref("https://rebind.test/a.pdf"))
    assert inner.connects == [("93.184.215.14", 443)]


def test_unknown_host_is_permanent_and_a_dns_outage_retriable(fetcher_factory: Any) -> None:
    dns = FakeDns({})
    fetcher = fetcher_factory(resolver=dns, attempts=3)
    with pytest.raises(FetchError, match="does not exist") as unknown:
        fetcher.fetch(ref("https://nowhere.test/a.pdf"))
    assert unknown.value.retriable is False
    assert dns.calls == ["nowhere.test"]

    def outage(host: str, port: int) -> list[str]:
        dns.calls.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    flaky = fetcher_factory(resolver=outage, attempts=3)
    with pytest.raises(FetchError, match="right now") as temporary:
        flaky.fetch(ref("https://nowhere.test/a.pdf"))
    assert temporary.value.retriable is True
    assert dns.calls == ["nowhere.test"] * 4  # 1 + 3 attempts


@pytest.mark.parametrize(
    "target", ["ftp://files.test/a.pdf", "file:///etc/passwd", "gopher://files.test:70/"]
)
def test_redirect_to_another_scheme_is_permanent(
    file_server: FileServer, fetcher_factory: Any, target: str
) -> None:
    fetcher = fetcher_factory(allow_http=True, policy=AddressPolicy(allow_private=True))
    with pytest.raises(FetchError) as failed:
        fetcher.fetch(ref(f"{file_server.url}/redirect?to={target}"))
    assert failed.value.retriable is False
    assert "redirect 1" in failed.value.public_message
    assert len(file_server.requests) == 1  # not retried


def test_redirect_to_http_is_refused_when_only_https_is(fetcher_factory: Any) -> None:
    fetcher = fetcher_factory()
    with pytest.raises(FetchRefused, match="only https"):
        fetcher._check_url("http://files.test/a", "x", hop=1)


def test_allow_list_holds_on_every_hop(file_server: FileServer, fetcher_factory: Any) -> None:
    (file_server.directory / "a.txt").write_text("hello")
    fetcher = fetcher_factory(
        allow_http=True,
        allowed_hosts=[".test"],
        policy=AddressPolicy(allow_private=True),
        resolver=FakeDns({"files.test": [["127.0.0.1"]], "sub.files.test": [["127.0.0.1"]]}),
    )
    port = file_server.port
    assert fetcher.fetch(ref(f"http://sub.files.test:{port}/files/a.txt")).data == b"hello"
    with pytest.raises(FetchRefused, match="not in fetch_allowed_hosts"):
        fetcher.fetch(ref(f"{file_server.url}/files/a.txt"))  # 127.0.0.1 is not listed
    only = fetcher_factory(
        allow_http=True,
        allowed_hosts=["files.test"],
        policy=AddressPolicy(allow_private=True),
        resolver=_dns_for(file_server),
    )
    with pytest.raises(FetchRefused, match=r"redirect 1 .*other\.test"):
        only.fetch(ref(f"http://files.test:{port}/redirect?to=http://other.test:{port}/"))


def test_too_many_redirects_is_permanent(file_server: FileServer, fetcher_factory: Any) -> None:
    fetcher = fetcher_factory(
        allow_http=True, max_redirects=3, policy=AddressPolicy(allow_private=True)
    )
    loop = "/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/redirect%25253Fto%25253D/x"
    with pytest.raises(FetchError, match="more than 3 redirects") as failed:
        fetcher.fetch(ref(f"{file_server.url}{loop}"))
    assert failed.value.retriable is False
    assert len(file_server.requests) == 4


# --- time --------------------------------------------------------------------------------


def test_a_trickling_server_is_cut_off_by_the_fetch_deadline(
    server_factory: Any, fetcher_factory: Any
) -> None:
    """Each byte comes well within the per-read timeout; only the total deadline stops it.
    Without the deadline the fetch would succeed after 60 bytes."""
    server = server_factory(trickle_s=0.2)
    fetcher = fetcher_factory(
        allow_http=True,
        timeout_s=30.0,
        deadline_s=1.0,
        attempts=3,
        policy=AddressPolicy(allow_private=True),
    )
    with pytest.raises(FetchError, match="deadline of 1 s") as late:
        fetcher.fetch(ref(f"{server.url}/trickle/60"))
    assert late.value.retriable is True
    assert server.requests == ["/trickle/60"]  # no attempt started after the deadline


# --- TLS to a pinned address ----------------------------------------------------------------


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, pem


@pytest.mark.parametrize(("served_name", "ok"), [("files.test", True), ("other.test", False)])
def test_https_to_the_pinned_address_verifies_the_name(
    tmp_path: Path, server_factory: Any, fetcher_factory: Any, served_name: str, ok: bool
) -> None:
    cert, key, pem = _certificate(tmp_path, served_name)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cadata=pem.decode())
    server = server_factory(ssl_context=server_context)
    (server.directory / "a.txt").write_text("over tls")
    fetcher = fetcher_factory(
        policy=AddressPolicy(private_hosts=("files.test",)),
        resolver=FakeDns({"files.test": [["127.0.0.1"]]}),
        verify=client_context,
    )
    url = f"https://files.test:{server.port}/files/a.txt"
    if ok:
        assert fetcher.fetch(ref(url)).data == b"over tls"
        assert server.hosts == [f"files.test:{server.port}"]
    else:
        with pytest.raises(FetchError, match="certificate") as bad:
            fetcher.fetch(ref(url))
        assert bad.value.retriable is False


def test_a_resolver_that_never_answers_is_cut_off_by_the_deadline(fetcher_factory: Any) -> None:
    import threading

    release = threading.Event()

    def hangs(host: str, port: int) -> list[str]:
        release.wait(120)  # a DNS server that does not answer (released at the end)
        return ["93.184.215.14"]

    fetcher = fetcher_factory(resolver=hangs, deadline_s=0.5, attempts=2)
    try:
        with pytest.raises(FetchError, match="deadline") as late:
            fetcher.fetch(ref("https://slow-dns.test/a.pdf"))
        assert late.value.retriable is True
    finally:
        release.set()


def test_environment_proxies_are_not_used(
    file_server: FileServer, fetcher_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would connect on our behalf, to addresses the guard never sees."""
    (file_server.directory / "a.txt").write_text("direct")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fetcher = fetcher_factory(allow_http=True, policy=AddressPolicy(allow_private=True))
    assert fetcher.fetch(ref(f"{file_server.url}/files/a.txt")).data == b"direct"
