"""Hostile URLs as a class: whatever a spec's ``url`` holds, each document ends in a
result or a per-document WorkerError, and no credential or query leaks into messages.

No packet leaves the machine: the resolver is a fake that knows no name, and the
network backend records connects and refuses them.
"""

from __future__ import annotations

import socket
from typing import Any

import httpcore
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zopilot_common.spec import DocumentSource
from zopilot_worker.errors import FetchError, FetchRefused, WorkerError
from zopilot_worker.jobrunner.fetch import Fetcher, redact_url, resolve_documents
from zopilot_worker.jobrunner.netguard import AddressPolicy, parse_ip

SECRET = "SIG-s3cr3t"


class NoNetwork(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connects.append((host, port))
        raise httpcore.ConnectError("no network in this test")


def no_dns(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


_hosts = st.one_of(
    st.sampled_from(
        [
            "files.example",
            "127.0.0.1",
            "[::1]",
            "[::ffff:169.254.169.254]",
            "169.254.169.254",
            "0x7f.1",
            "2130706433",
            "[fe80::1%25eth0]",
            "[::1",
            "exämple.com",
            "a..b",
            "-x.example",
            "%00",
            "",
            "x" * 300,
            "user:pw@files.example",
        ]
    ),
    st.text(min_size=0, max_size=40),
)
_ports = st.one_of(
    st.just(""),
    st.integers(min_value=-5, max_value=200_000).map(lambda p: f":{p}"),
    st.text(max_size=8).map(lambda p: f":{p}"),
)
_schemes = st.sampled_from(["http", "https", "HTTPS", "ftp", "file", "javascript", "", "h\ttp"])
_urls = st.one_of(
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}?X-Sig={SECRET}#{SECRET}",
        _schemes,
        _hosts,
        _ports,
        st.text(max_size=30),
    ),
    st.text(max_size=200),
)


@pytest.fixture(scope="module")
def fuzz_fetcher() -> Any:
    backend = NoNetwork()
    fetcher = Fetcher(
        max_bytes=1024,
        timeout_s=5.0,
        deadline_s=30.0,  # a generous safety bound per input, not a speed assertion
        attempts=2,
        backoff_s=0.0,
        allow_http=True,
        policy=AddressPolicy(),
        resolver=no_dns,
        network_backend=backend,
    )
    yield fetcher, backend
    fetcher.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=_urls)
def test_any_url_is_a_per_document_outcome(url: str, fuzz_fetcher: Any) -> None:
    fetcher, backend = fuzz_fetcher
    [ref] = resolve_documents(
        [DocumentSource(url=url)], configmap_root=_nowhere(), volume_root=_nowhere()
    )
    assert SECRET not in ref.source and ref.key
    with pytest.raises(WorkerError) as failed:  # nothing resolves, nothing connects
        fetcher.fetch(ref)
    assert isinstance(failed.value, FetchError)
    assert SECRET not in failed.value.public_message
    for host, _ in backend.connects:
        # Only global addresses are ever handed to the socket layer.
        ip = parse_ip(host)
        assert ip is not None and AddressPolicy().refusal(ip) is None, host


@settings(max_examples=300, deadline=None)
@given(url=_urls)
def test_redact_url_is_total_and_drops_query_and_credentials(url: str) -> None:
    shown = redact_url(url)
    assert SECRET not in shown
    assert "user:pw@" not in shown
    assert len(shown) <= 300


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://files.example:99999/a.pdf", "Port out of range"),
        ("https://[::1/a.pdf", "Invalid IPv6 URL"),
        ("https://files.example:0/a.pdf", "port 0"),
        ("https:///a.pdf", "no host"),
        ("https://exa mple.com/a.pdf", "whitespace"),
        ("ftp://files.example/a.pdf", "only http(s)"),
        ("https://-bad-.example/a.pdf", "not a valid host name"),
    ],
)
def test_malformed_urls_are_permanent_document_errors(url: str, reason: str) -> None:
    [ref] = resolve_documents(
        [DocumentSource(url=url)], configmap_root=_nowhere(), volume_root=_nowhere()
    )
    assert ref.problem is not None
    assert isinstance(ref.problem, FetchError) and not isinstance(ref.problem, FetchRefused)
    assert ref.problem.retriable is False
    assert "not a valid URL" in ref.problem.public_message
    assert reason in ref.problem.public_message


def _nowhere() -> Any:
    from pathlib import Path

    return Path("/nonexistent-zopilot-test-root")


_names = st.one_of(
    st.sampled_from(["inbox", ".", "..", "a/b", "x\x00y", "a" * 300, "**", "[", "..data"]),
    st.text(max_size=30),
)
_globs = st.one_of(
    st.sampled_from(
        ["a/**b", "**", ".", "./", "*/../x", "/etc/passwd", "x\x00y", "a" * 5000, "[!]", "*"]
    ),
    st.text(max_size=60),
)


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("mounts")
    (root / "volumes" / "inbox" / "sub").mkdir(parents=True)
    (root / "volumes" / "inbox" / "a.txt").write_text("a")
    (root / "volumes" / "inbox" / "sub" / "b.txt").write_text("b")
    (root / "configmaps" / "inbox").mkdir(parents=True)
    (root / "configmaps" / "inbox" / "k").write_text("k")
    (root / "secret.txt").write_text("outside every mount")
    return root


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claim=_names, pattern=_globs, name=_names, key=_names)
def test_any_volume_or_configmap_source_is_a_per_document_outcome(
    claim: str, pattern: str, name: str, key: str, mounts: Any, fuzz_fetcher: Any
) -> None:
    fetcher, _ = fuzz_fetcher
    sources = [
        DocumentSource.model_validate({"volume": {"claimName": claim, "path": pattern}}),
        DocumentSource.model_validate({"configMap": {"name": name, "key": key}}),
    ]
    refs = resolve_documents(
        sources, configmap_root=mounts / "configmaps", volume_root=mounts / "volumes"
    )
    assert len(refs) >= 2
    for ref in refs:
        try:
            data = fetcher.fetch(ref).data
        except WorkerError:
            continue
        assert data in (b"a", b"b", b"k")  # never anything outside the mounts
