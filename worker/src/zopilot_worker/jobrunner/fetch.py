"""Finding and fetching a job's documents: http(s) URLs, mounted ConfigMaps, mounted volumes.

Mount layout (the operator's half of the contract, see WorkerSettings):
ConfigMap ``name`` is mounted at ``<configmap_root>/<name>/`` (each key a
file); claim ``claimName`` at ``<volume_root>/<claimName>/``, where a volume
source's ``path`` is a glob relative to the claim. Nothing may escape its
mount: absolute paths and ``..`` are refused, and matches are checked after
resolving symlinks.

URLs: https only unless ``allow_http``; every hop (redirects are followed
here, one by one, at most ``max_redirects``) is checked for its scheme, the
host allow-list, and by :mod:`~zopilot_worker.jobrunner.netguard` for the
address actually connected to (SSRF). Each document's fetch, retries and
redirects included, ends by ``deadline_s``. Proxies from the environment are
not used: a proxy would connect on our behalf to addresses we cannot check.

Every failure is a :class:`~zopilot_worker.errors.WorkerError` about that one
document: ``FetchRefused`` (SSRF guard, scheme, allow-list; never retried),
``FetchError`` (retriable for timeouts, connection failures, 5xx and 429;
permanent for a malformed URL, an unknown host, 4xx, a bad certificate and
missing files) or ``DocumentTooLarge``. Messages never carry a URL's
credentials, query string or fragment (presigned URLs put credentials there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import ssl
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

import httpcore
import httpx
from zopilot_common.spec import DocumentSource

from zopilot_worker.errors import DocumentTooLarge, FetchError, FetchRefused, WorkerError
from zopilot_worker.jobrunner.netguard import (
    AddressPolicy,
    GuardedBackend,
    Resolver,
    deadline,
    host_matches,
    parse_ip,
    time_left,
)
from zopilot_worker.settings import WorkerSettings

log = logging.getLogger(__name__)

# ConfigMap keys: Kubernetes allows [-._a-zA-Z0-9]+ (and never "." or "..").
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# Statuses worth another attempt: the server may answer differently later.
_RETRIABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_REDIRECT_STATUS = {301, 302, 303, 307, 308}
MAX_GLOB_MATCHES = 10_000
MAX_URL_CHARS = 8192
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class DocumentRef:
    """One document to process. ``problem`` is set when resolving it already failed."""

    source: str
    name: str
    location: str
    origin: str  # "url" | "configMap" | "volume"
    problem: WorkerError | None = None
    # Stable id of this document within the job (the same in every attempt): a hash of
    # where it comes from, plus its occurrence number. Results are resumed by it.
    key: str = ""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    filename: str
    content_type: str | None


def _printable(text: str, limit: int = 300) -> str:
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe for logs and status.

    Total: a malformed URL gives its text up to the query, minus anything
    before an ``@`` in the authority, never an exception.
    """
    try:
        parts = urlsplit(url)
        if parts.netloc:
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            if parts.port:
                host = f"{host}:{parts.port}"
            return _printable(urlunsplit((parts.scheme, host, parts.path, "", "")))
    except ValueError:
        pass
    bare = url.split("?", 1)[0].split("#", 1)[0]
    before, sep, rest = bare.partition("//")
    if sep:
        authority, slash, path = rest.partition("/")
        bare = f"{before}//{authority.rpartition('@')[2]}{slash}{path}"
    return _printable(bare)


def _url_problem(url: str) -> str | None:
    """Why ``url`` is not a fetchable absolute http(s) URL, or None."""
    if len(url) > MAX_URL_CHARS:
        return f"longer than {MAX_URL_CHARS} characters"
    if any(not c.isprintable() or c.isspace() for c in url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range
    except ValueError as exc:
        return str(exc)
    if parts.scheme.lower() not in ("http", "https"):
        return "only http(s) URLs can be fetched"
    if port == 0:
        return "port 0 is not a valid port"
    host = parts.hostname or ""
    if not host:
        return "no host name"
    if parse_ip(host) is not None:
        return None
    if ":" in host or "%" in host:
        return f"{_printable(host, 80)!r} is not a valid host"
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return f"{_printable(host, 80)!r} is not a valid international host name"
    labels = ascii_host.rstrip(".").split(".")
    if len(ascii_host) > 253 or any(
        not 0 < len(label) <= 63 or not set(label) <= _HOST_CHARS or label[0] == "-"
        for label in labels
    ):
        return f"{_printable(host, 80)!r} is not a valid host name"
    return None


def _safe_relative(path: str) -> PurePosixPath | None:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not path.strip():
        return None
    return relative


def resolve_documents(
    sources: list[DocumentSource], *, configmap_root: Path, volume_root: Path
) -> list[DocumentRef]:
    """Expand the spec's sources into documents (a volume glob can yield many)."""
    refs: list[DocumentRef] = []
    for source in sources:
        if source.url is not None:
            shown = redact_url(source.url)
            why = _url_problem(source.url)
            if why is not None:
                error = FetchError(f"{shown}: not a valid URL: {why}", retriable=False)
                refs.append(DocumentRef(shown, "document", "", "url", error))
                continue
            name = unquote(PurePosixPath(urlsplit(source.url).path).name) or "document"
            refs.append(DocumentRef(shown, name, source.url, "url"))
        elif source.config_map is not None:
            cm = source.config_map
            shown = f"configMap:{cm.name}/{cm.key}"
            if not _CONFIGMAP_KEY.match(cm.key) or cm.key in (".", "..") or "/" in cm.name:
                problem = FetchError(f"{shown}: not a valid ConfigMap name/key", retriable=False)
                refs.append(DocumentRef(shown, cm.key, "", "configMap", problem))
                continue
            path = configmap_root / cm.name / cm.key
            refs.append(DocumentRef(shown, cm.key, str(path), "configMap"))
        elif source.volume is not None:
            claim, pattern = source.volume.claim_name, source.volume.path
            try:
                refs.extend(_expand_volume(claim, pattern, volume_root))
            except (ValueError, OSError, IndexError, UnicodeError) as exc:
                # A hostile or odd glob ('a/**b', a NUL byte, a name too long): this source
                # fails, not the job.
                shown = _printable(f"volume:{claim}/{pattern}")
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                problem = FetchError(
                    f"{shown}: the path cannot be used as a glob: {_printable(why, 120)}",
                    retriable=False,
                    detail=repr(exc),
                )
                refs.append(DocumentRef(shown, "document", "", "volume", problem))
    return with_keys(refs)


def with_keys(refs: Iterable[DocumentRef]) -> list[DocumentRef]:
    """Give each document its stable key: hash of origin and location, plus occurrence."""
    seen: Counter[str] = Counter()
    keyed = []
    for ref in refs:
        where = f"{ref.origin}\0{ref.location or ref.source}".encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(where).hexdigest()[:24]
        seen[digest] += 1
        keyed.append(dataclasses.replace(ref, key=f"{digest}-{seen[digest]}"))
    return keyed


def _expand_volume(claim: str, pattern: str, volume_root: Path) -> list[DocumentRef]:
    shown = f"volume:{claim}/{pattern}"
    relative = _safe_relative(pattern)
    if relative is None or "/" in claim or claim in (".", ".."):
        problem = FetchError(
            f"{shown}: the path must be relative to the claim and must not contain '..'",
            retriable=False,
        )
        return [DocumentRef(shown, PurePosixPath(pattern).name, "", "volume", problem)]
    if relative == PurePosixPath("."):
        problem = FetchError(
            f"{shown}: the path names the claim itself; give a file or a glob such as '*'",
            retriable=False,
        )
        return [DocumentRef(shown, "document", "", "volume", problem)]
    root = (volume_root / claim).resolve()
    matches: list[DocumentRef] = []
    for path in sorted(root.glob(str(relative))):
        # Kubernetes' atomic-writer bookkeeping (..data, ..2024_...) is not a document.
        if any(part.startswith("..") for part in path.relative_to(root).parts):
            continue
        resolved = path.resolve()
        if not resolved.is_relative_to(root):
            log.warning("skipping %s: its symlink leaves claim %s", path, claim)
            continue
        if not resolved.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        matches.append(DocumentRef(f"volume:{claim}/{rel}", path.name, str(resolved), "volume"))
        if len(matches) > MAX_GLOB_MATCHES:
            problem = FetchError(
                f"{shown} matches more than {MAX_GLOB_MATCHES} files; narrow the glob",
                retriable=False,
            )
            return [DocumentRef(shown, "", "", "volume", problem)]
    if not matches:
        problem = FetchError(f"{shown}: no file matches (is the claim mounted?)", retriable=False)
        return [DocumentRef(shown, PurePosixPath(pattern).name, "", "volume", problem)]
    return matches


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that connects through :class:`GuardedBackend`."""

    def __init__(self, backend: GuardedBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx has no public hook for the network backend: replace its pool with one that
        # uses ours (the same arguments httpx passes, plus network_backend).
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


class Fetcher:
    """Reads a :class:`DocumentRef`'s bytes, at most ``max_bytes``. Thread-safe.

    ``timeout_s`` bounds each network phase (connect, each read, each write);
    ``deadline_s`` the whole fetch of one document. ``resolver``, ``network_backend``
    and ``verify`` are for tests (a fake DNS, a recording backend, a test CA).
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout_s: float,
        attempts: int = 3,
        backoff_s: float = 1.0,
        deadline_s: float = 300.0,
        allow_http: bool = False,
        allowed_hosts: Iterable[str] = (),
        max_redirects: int = 5,
        policy: AddressPolicy | None = None,
        resolver: Resolver | None = None,
        network_backend: httpcore.NetworkBackend | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.deadline_s = deadline_s
        self.schemes = ("http", "https") if allow_http else ("https",)
        self.allowed_hosts = tuple(allowed_hosts)
        self.max_redirects = max_redirects
        self.timeout_s = timeout_s
        self.backend = GuardedBackend(
            policy or AddressPolicy(), resolver=resolver, inner=network_backend
        )
        context = verify or httpx.create_ssl_context(trust_env=True)
        self._client = httpx.Client(
            transport=GuardedTransport(self.backend, context),
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout_s),
            headers={"Accept-Encoding": "identity", "User-Agent": "zopilot-worker"},
        )

    @classmethod
    def from_settings(cls, settings: WorkerSettings, **overrides: object) -> Fetcher:
        values: dict[str, object] = {
            "max_bytes": settings.max_upload_bytes,
            "timeout_s": settings.fetch_timeout_s,
            "attempts": settings.fetch_attempts,
            "backoff_s": settings.fetch_backoff_s,
            "deadline_s": settings.fetch_deadline_s,
            "allow_http": settings.fetch_allow_http,
            "allowed_hosts": settings.fetch_allowed_hosts,
            "max_redirects": settings.fetch_max_redirects,
            "policy": AddressPolicy(
                allow_private=settings.fetch_allow_private_networks,
                private_hosts=tuple(settings.fetch_private_hosts),
            ),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def close(self) -> None:
        self._client.close()

    def fetch(self, ref: DocumentRef) -> Fetched:
        if ref.problem is not None:
            raise ref.problem
        if ref.origin == "url":
            return self._fetch_url(ref)
        return self._read_file(ref)

    def _too_large(self, shown: str, size: int | None = None) -> DocumentTooLarge:
        got = f"{size} bytes" if size is not None else "more"
        return DocumentTooLarge(f"{shown} has {got}; the limit is {self.max_bytes} bytes")

    def _read_file(self, ref: DocumentRef) -> Fetched:
        path = Path(ref.location)
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise self._too_large(ref.source, size)
            data = path.read_bytes()
        except FileNotFoundError:
            raise FetchError(f"{ref.source}: not found (is it mounted?)", retriable=False) from None
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
            raise FetchError(
                f"{ref.source}: cannot be read", retriable=False, detail=repr(exc)
            ) from None
        if len(data) > self.max_bytes:  # grew between stat and read
            raise self._too_large(ref.source, len(data))
        return Fetched(data, ref.name, None)

    def _fetch_url(self, ref: DocumentRef) -> Fetched:
        with deadline(self.deadline_s) as ends:
            last: FetchError | None = None
            for attempt in range(self.attempts):
                if attempt:
                    # Exponential backoff between attempts: 1 s, 2 s, 4 s ... by default,
                    # never past the deadline.
                    pause = self.backoff_s * 2 ** (attempt - 1)
                    if time.monotonic() + pause >= ends:
                        break
                    time.sleep(pause)
                try:
                    return self._get(ref)
                except FetchError as exc:
                    if not exc.retriable:
                        raise
                    last = exc
                    log.warning("fetch %s attempt %d failed: %s", ref.source, attempt + 1, exc)
                    if time.monotonic() >= ends:
                        break
            assert last is not None
            raise last

    def _check_url(self, url: str, shown: str, *, hop: int) -> httpx.URL:
        """The URL of one hop, if it may be fetched; FetchRefused / FetchError otherwise."""
        where = f"{shown}" if hop == 0 else f"redirect {hop} to {shown}"
        problem = _url_problem(url)
        if problem is not None:
            raise FetchError(f"{where}: not a valid URL: {problem}", retriable=False)
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
            raise FetchError(f"{where}: not a valid URL: {exc}", retriable=False) from None
        if parsed.scheme not in self.schemes:
            raise FetchRefused(
                f"{where}: only {' and '.join(self.schemes)} URLs are fetched"
                + ("" if "http" in self.schemes else " (set fetch_allow_http to allow http)")
            )
        host = parsed.raw_host.decode("ascii")
        if self.allowed_hosts and not host_matches(host, self.allowed_hosts):
            raise FetchRefused(f"{where}: host {host!r} is not in fetch_allowed_hosts")
        # IP literals: the network guard would refuse them too; refuse before connecting.
        literal = parse_ip(host)
        if literal is not None:
            reason = self.backend.policy.refusal(literal, host=host)
            if reason is not None:
                raise FetchRefused(f"{where}: refused to connect to {host}: {reason}")
        return parsed

    def _timeout(self, shown: str) -> httpx.Timeout:
        left = time_left()
        if left is not None and left <= 0:
            raise self._deadline_error(shown)
        phase = self.timeout_s if left is None else min(self.timeout_s, left)
        return httpx.Timeout(phase)

    def _deadline_error(self, shown: str) -> FetchError:
        return FetchError(
            f"GET {shown} did not finish within the fetch deadline of {self.deadline_s:g} s",
            retriable=True,
        )

    def _get(self, ref: DocumentRef) -> Fetched:
        shown, url = ref.source, ref.location
        for hop in range(self.max_redirects + 1):
            target = self._check_url(url, shown, hop=hop)
            result = self._get_one(target, shown, ref.name)
            if isinstance(result, Fetched):
                return result
            url, shown = result, redact_url(result)
        raise FetchError(
            f"GET {ref.source}: more than {self.max_redirects} redirects", retriable=False
        )

    def _get_one(self, url: httpx.URL, shown: str, name: str) -> Fetched | str:
        """One request: the document, or the next URL when it redirects."""
        try:
            with self._client.stream("GET", url, timeout=self._timeout(shown)) as response:
                status = response.status_code
                if status in _REDIRECT_STATUS:
                    location = response.headers.get("location", "").strip()
                    if not location:
                        raise FetchError(
                            f"GET {shown} answered HTTP {status} without a Location",
                            retriable=False,
                        )
                    try:
                        return str(response.url.join(location))
                    except (httpx.InvalidURL, ValueError, UnicodeError):
                        raise FetchError(
                            f"GET {shown} redirects to an invalid URL", retriable=False
                        ) from None
                if status >= 300:
                    raise FetchError(
                        f"GET {shown} answered HTTP {status}",
                        retriable=status in _RETRIABLE_STATUS,
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise self._too_large(shown, int(declared))
                chunks, received = [], 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > self.max_bytes:
                        raise self._too_large(shown)
                    chunks.append(chunk)
                content_type = response.headers.get("content-type")
        except httpx.TimeoutException as exc:
            left = time_left()
            if left is not None and left <= 0:
                raise self._deadline_error(shown) from None
            raise FetchError(f"GET {shown} timed out", retriable=True, detail=repr(exc)) from None
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise FetchError(
                    f"GET {shown}: the server's TLS certificate is not valid for it",
                    retriable=False,
                    detail=repr(exc),
                ) from None
            if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
                raise FetchError(
                    f"GET {shown} failed: {type(exc).__name__}", retriable=False, detail=repr(exc)
                ) from None
            raise FetchError(
                f"GET {shown} failed: {type(exc).__name__}", retriable=True, detail=repr(exc)
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, UnicodeError) as exc:
            raise FetchError(
                f"GET {shown} failed: {type(exc).__name__}", retriable=False, detail=repr(exc)
            ) from None
        return Fetched(b"".join(chunks), name, content_type)
