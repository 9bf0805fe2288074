"""Finding and fetching a job's documents: http(s) URLs, mounted ConfigMaps, mounted volumes.

Mount layout (the operator's half of the contract, see WorkerSettings):
ConfigMap ``name`` is mounted at ``<configmap_root>/<name>/`` (each key a
file); claim ``claimName`` at ``<volume_root>/<claimName>/``, where a volume
source's ``path`` is a glob relative to the claim. Nothing may escape its
mount: absolute paths and ``..`` are refused, and matches are checked after
resolving symlinks.

Every failure is a :class:`~zopilot_worker.errors.WorkerError`: ``FetchError``
(retriable for timeouts, 5xx and 429; permanent for 4xx and missing files) or
``DocumentTooLarge``. Messages never carry a URL's query string (presigned
URLs put credentials there).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
from zopilot_common.spec import DocumentSource

from zopilot_worker.errors import DocumentTooLarge, FetchError, WorkerError

log = logging.getLogger(__name__)

# ConfigMap keys: Kubernetes allows [-._a-zA-Z0-9]+ (and never "." or "..").
_CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# Statuses worth another attempt: the server may answer differently later.
_RETRIABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_GLOB_MATCHES = 10_000


@dataclass(frozen=True)
class DocumentRef:
    """One document to process. ``problem`` is set when resolving it already failed."""

    source: str
    name: str
    location: str
    origin: str  # "url" | "configMap" | "volume"
    problem: WorkerError | None = None


@dataclass(frozen=True)
class Fetched:
    data: bytes
    filename: str
    content_type: str | None


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe for logs and status."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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
            refs.extend(_expand_volume(source.volume.claim_name, source.volume.path, volume_root))
    return refs


def _expand_volume(claim: str, pattern: str, volume_root: Path) -> list[DocumentRef]:
    shown = f"volume:{claim}/{pattern}"
    relative = _safe_relative(pattern)
    if relative is None or "/" in claim or claim in (".", ".."):
        problem = FetchError(
            f"{shown}: the path must be relative to the claim and must not contain '..'",
            retriable=False,
        )
        return [DocumentRef(shown, PurePosixPath(pattern).name, "", "volume", problem)]
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


class Fetcher:
    """Reads a :class:`DocumentRef`'s bytes, at most ``max_bytes``. Thread-safe."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout_s: float,
        attempts: int = 3,
        backoff_s: float = 1.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s), follow_redirects=True, max_redirects=5
        )

    def close(self) -> None:
        self._client.close()

    def fetch(self, ref: DocumentRef) -> Fetched:
        if ref.problem is not None:
            raise ref.problem
        if ref.origin == "url":
            return self._fetch_url(ref)
        return self._read_file(ref)

    def _too_large(self, ref: DocumentRef, size: int | None = None) -> DocumentTooLarge:
        got = f"{size} bytes" if size is not None else "more"
        return DocumentTooLarge(f"{ref.source} has {got}; the limit is {self.max_bytes} bytes")

    def _read_file(self, ref: DocumentRef) -> Fetched:
        path = Path(ref.location)
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise self._too_large(ref, size)
            data = path.read_bytes()
        except FileNotFoundError:
            raise FetchError(f"{ref.source}: not found (is it mounted?)", retriable=False) from None
        except OSError as exc:
            raise FetchError(
                f"{ref.source}: cannot be read", retriable=False, detail=repr(exc)
            ) from None
        if len(data) > self.max_bytes:  # grew between stat and read
            raise self._too_large(ref, len(data))
        return Fetched(data, ref.name, None)

    def _fetch_url(self, ref: DocumentRef) -> Fetched:
        if urlsplit(ref.location).scheme not in ("http", "https"):
            raise FetchError(f"{ref.source}: only http and https URLs are fetched", retriable=False)
        last: FetchError | None = None
        for attempt in range(self.attempts):
            if attempt:
                # Exponential backoff between attempts: 1 s, 2 s, 4 s ... by default.
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return self._get(ref)
            except FetchError as exc:
                if not exc.retriable:
                    raise
                last = exc
                log.warning("fetch %s attempt %d failed: %s", ref.source, attempt + 1, exc)
        assert last is not None
        raise last

    def _get(self, ref: DocumentRef) -> Fetched:
        try:
            with self._client.stream("GET", ref.location) as response:
                status = response.status_code
                if status >= 400:
                    raise FetchError(
                        f"GET {ref.source} answered HTTP {status}",
                        retriable=status in _RETRIABLE_STATUS,
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise self._too_large(ref, int(declared))
                chunks, received = [], 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > self.max_bytes:
                        raise self._too_large(ref)
                    chunks.append(chunk)
                content_type = response.headers.get("content-type")
        except httpx.TimeoutException as exc:
            raise FetchError(
                f"GET {ref.source} timed out", retriable=True, detail=repr(exc)
            ) from None
        except httpx.TransportError as exc:
            raise FetchError(
                f"GET {ref.source} failed: {type(exc).__name__}", retriable=True, detail=repr(exc)
            ) from None
        except httpx.TooManyRedirects:
            raise FetchError(f"GET {ref.source}: too many redirects", retriable=False) from None
        except httpx.HTTPError as exc:
            raise FetchError(
                f"GET {ref.source} failed: {type(exc).__name__}", retriable=False, detail=repr(exc)
            ) from None
        return Fetched(b"".join(chunks), ref.name, content_type)
