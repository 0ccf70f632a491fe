"""GGUF headers over HTTP: `vramc analyze URL`, `hf://ORG/REPO/FILE.gguf`, `hf://ORG/REPO:QUANT`.

Only the header is read, with HTTP Range requests that grow until the tensor table ends: the
parser of gguf.py runs over a buffer that fetches what it is about to read, one read-ahead chunk
at a time, so the bytes transferred stay within the header plus one chunk and tensor data is never
downloaded. A server that ignores Range (answers 200 with the whole file) is refused, not read.

Standard library only (urllib), imported when a remote model is named. What it honours: redirects
(Hugging Face answers `resolve/` with a redirect to a CDN; the token goes to the first host only),
bounded retries of transient failures (429, 5xx, resets, short bodies), a timeout per request
(VRAMC_HTTP_TIMEOUT seconds, default 30), HF_TOKEN, HF_ENDPOINT, the proxy variables urllib reads
(http_proxy, https_proxy, no_proxy), and offline work (VRAMC_OFFLINE=1 or HF_HUB_OFFLINE=1, or a
network that cannot be reached) from the headers and repository listings cached under
$VRAMC_CACHE/remote (a listing at a commit is never asked again; a branch's last listing is used
offline, with a note naming its commit).

Hugging Face references, resolved as llama.cpp's `-hf` resolves them (common/download.cpp,
find_best_model): the repository's files come from `GET {HF_ENDPOINT}/api/models/ORG/REPO/revision/REV`
(REV defaults to main; the answer's commit pins every later request), and `:QUANT` picks the model
files (not mmproj, imatrix, mtp-, eagle3-, dflash-, dspark-) whose path matches QUANT followed by
`.` or `-`, case-insensitively, first parts of split models only. Where llama.cpp takes the first
match, vramc asks which one when there are several, and lists what is there when there is none.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from vramc.model.gguf import (
    _CHUNK,
    ARRAY_LIMIT,
    GGUFError,
    GGUFHeader,
    _Parser,
    _short_strings,
    check_parts,
    meta_of_parts,
)
from vramc.model.modelmeta import ModelMeta

READ_AHEAD = 1 << 20  # bytes fetched past what the parser needs, per request
MAX_REMOTE_HEADER = 1 << 26  # no model's header comes near 64 MiB; a longer one is a corrupt count
MAX_JSON = 1 << 24  # a repository listing larger than this is refused
ATTEMPTS = 3
DEFAULT_TIMEOUT = 30.0
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
_SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_NOT_MODELS = ("mmproj", "imatrix", "mtp-", "eagle3-", "dflash-", "dspark-")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_QUANT_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")
_REVISION_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}


class RemoteError(Exception):
    """A remote model that cannot be read: the message says why and what to do."""


def is_remote(text: str) -> bool:
    return text.startswith(("http://", "https://", "hf://"))


@dataclass
class Ref:
    """What the user named: a URL, or a Hugging Face repository with a file or a quant."""

    text: str
    url: str | None = None
    repo: str | None = None
    revision: str = "main"
    file: str | None = None
    quant: str | None = None


def parse_ref(text: str) -> Ref:
    """`https://...`, `hf://ORG/REPO[@REV]/PATH.gguf`, `hf://ORG/REPO[@REV][:QUANT]`."""
    if any(c in text for c in "\r\n\t\0 ") or len(text) > 2000:
        raise RemoteError(f"{text[:80]!r}: not a URL (spaces or control characters)")
    if text.startswith(("http://", "https://")):
        try:
            parts = urlsplit(text)
        except ValueError as e:  # an unclosed [IPv6 address]
            raise RemoteError(f"{text}: not a URL ({e})") from None
        if not parts.hostname:
            raise RemoteError(f"{text}: no host in the URL")
        try:
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            raise RemoteError(f"{text}: the port is not a number from 0 to 65535") from None
        m = re.match(r"^/([^/]+/[^/]+)/blob/([^/]+)/(.+)$", parts.path)
        if m and parts.hostname in ("huggingface.co", "hf.co"):
            # a repository page's "blob" link serves HTML; "resolve" serves the file
            text = urlunsplit(parts._replace(path=f"/{m[1]}/resolve/{m[2]}/{m[3]}"))
        return Ref(text, url=text)
    if not text.startswith("hf://"):
        raise RemoteError(f"{text}: give an http(s):// URL or hf://ORG/REPO/FILE.gguf")
    body = text[len("hf://") :]
    quant = None
    segments = body.split("/")
    if len(segments) < 2:
        raise RemoteError(f"{text}: expected hf://ORG/REPO/FILE.gguf or hf://ORG/REPO:QUANT")
    org, repo_rev, rest = segments[0], segments[1], segments[2:]
    if not rest and ":" in repo_rev:
        repo_rev, quant = repo_rev.split(":", 1)
        if not _QUANT_RE.match(quant):
            raise RemoteError(f"{text}: {quant!r} is not a quant type such as Q4_K_M")
    repo, _, revision = repo_rev.partition("@")
    if not (_REPO_PART.match(org) and _REPO_PART.match(repo)):
        raise RemoteError(f"{text}: {org}/{repo} is not a Hugging Face repository name (ORG/REPO)")
    if revision and not _REVISION_RE.match(revision):
        raise RemoteError(f"{text}: {revision!r} is not a revision (a branch, tag or commit)")
    file = "/".join(rest) or None
    if file is not None and (not file.endswith(".gguf") or ".." in rest or "" in rest):
        raise RemoteError(f"{text}: the file must be a path ending in .gguf inside the repository")
    return Ref(text, repo=f"{org}/{repo}", revision=revision or "main", file=file, quant=quant)


# --- HTTP ------------------------------------------------------------------------------------
@dataclass
class Response:
    status: int
    headers: Any
    body: bytes
    url: str


class Http:
    """urllib with the token for the first host only, bounded retries and a deadline."""

    def __init__(
        self,
        token: str | None = None,
        timeout: float | None = None,
        attempts: int = ATTEMPTS,
        backoff: float = 0.5,
    ) -> None:
        self.token = token
        if timeout is None:
            try:
                timeout = float(os.environ.get("VRAMC_HTTP_TIMEOUT") or DEFAULT_TIMEOUT)
            except ValueError:
                timeout = DEFAULT_TIMEOUT
        self.timeout = max(0.1, min(timeout, 600.0))
        self.attempts, self.backoff = attempts, backoff
        self.transferred = 0  # body bytes received, every request
        self.requests = 0
        opener = urllib.request.OpenerDirector()
        # only HTTP(S): no file://, ftp:// or data: through a redirect
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(),
            _Redirect(),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
        ):
            opener.add_handler(handler)
        self.opener = opener

    def get(
        self,
        url: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int,
        what: str,
    ) -> Response:
        """GET `url` (bytes [start, end) with a Range), reading at most `limit` body bytes."""
        last = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 5.0))
            try:
                return self._get_once(url, start, end, limit)
            except _Retry as e:
                last = e
                if e.wait:
                    time.sleep(min(e.wait, 5.0))
        raise RemoteError(f"{what}: {last} (tried {self.attempts} times)")

    def _get_once(self, url: str, start: int | None, end: int | None, limit: int) -> Response:
        if _offline():  # not one request, whoever asks: the caller's cache answers or it says so
            raise _Offline("offline (VRAMC_OFFLINE or HF_HUB_OFFLINE is set)")
        req = urllib.request.Request(url, headers={"User-Agent": "vramc", "Accept-Encoding": "identity"})
        if start is not None and end is not None:
            req.add_header("Range", f"bytes={start}-{end - 1}")
        if self.token:
            req.add_unredirected_header("Authorization", f"Bearer {self.token}")
        req.vramc_token = self.token  # type: ignore[attr-defined]
        deadline = time.monotonic() + self.timeout
        self.requests += 1
        try:
            resp = self.opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in _TRANSIENT:
                raise _Retry(f"HTTP {e.code} {e.reason}", _retry_after(e.headers)) from None
            if 300 <= e.code < 400:
                reason = str(e.reason)
                if "refused" not in reason:
                    reason = f"too many redirects or a redirect loop (HTTP {e.code})"
                raise RemoteError(f"{url}: {reason}") from None
            return Response(e.code, e.headers, b"", e.url or url)
        except urllib.error.URLError as e:
            why = e.reason
            if isinstance(why, (socket.timeout, TimeoutError, ConnectionResetError)):
                raise _Retry(f"no answer: {_why(why)}") from None
            raise _Offline(f"cannot reach {urlsplit(url).netloc}: {_why(why)}") from None
        except TimeoutError:
            raise _Retry(f"timed out after {self.timeout:g} s") from None
        except (http.client.HTTPException, ConnectionError) as e:
            raise _Retry(f"the connection failed: {_why(e)}") from None
        except ValueError as e:  # a malformed URL urllib refuses
            raise RemoteError(f"{url}: {e}") from None
        try:
            chunks, got = [], 0
            while got <= limit:
                if time.monotonic() > deadline:
                    raise _Retry(f"timed out after {self.timeout:g} s reading the answer")
                block = resp.read(min(1 << 16, limit + 1 - got))
                if not block:
                    break
                chunks.append(block)
                got += len(block)
                self.transferred += len(block)
        except TimeoutError:
            raise _Retry(f"timed out after {self.timeout:g} s reading the answer") from None
        except (http.client.HTTPException, ConnectionError) as e:
            raise _Retry(f"the answer was cut short ({_why(e)})") from None
        finally:
            resp.close()
        return Response(resp.status, resp.headers, b"".join(chunks), resp.geturl())


class _Retry(Exception):
    def __init__(self, message: str, wait: float = 0.0) -> None:
        super().__init__(message)
        self.wait = wait


class _Offline(RemoteError):
    """The network could not be reached: the cache may answer instead."""


class _NotCached(_Offline):
    """No network and no cached answer: the message says so whole, naming the reference."""


def _why(e: object) -> str:
    """An OS or HTTP error in words ("Connection refused"), not "[Errno 111] ..." or a repr."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _retry_after(headers) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", 0)))
    except (TypeError, ValueError):
        return 0.0


class _Redirect(urllib.request.HTTPRedirectHandler):
    max_redirections = 10

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl,
                code,
                f"redirect to {newurl!r} refused (not http or https)",
                headers,
                fp,
            )
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.vramc_token = token = getattr(req, "vramc_token", None)
            # the token goes back only to the host it was given for, never to a CDN
            if token and urlsplit(newurl).netloc == urlsplit(req.full_url).netloc:
                new.add_unredirected_header("Authorization", f"Bearer {token}")
        return new


# --- the range-backed parser -----------------------------------------------------------------
class _RangeParser(_Parser):
    """gguf.py's parser over a buffer that grows by Range requests as the parser reads on."""

    def __init__(self, name: str, fetch, first: bytes, size: int) -> None:
        self.data = bytearray(first)  # self.buf, as the bytearray it is here
        super().__init__(name, self.data, size, ARRAY_LIMIT)  # type: ignore[arg-type]
        self.fetch = fetch

    def need(self, end: int) -> None:
        have = len(self.buf)
        if end <= have:
            return
        if end > MAX_REMOTE_HEADER:
            self.fail(
                f"the header (metadata and tensor table) runs past {MAX_REMOTE_HEADER} "
                "bytes; no model's comes near: a corrupt length or count?"
            )
        stop = min(self.size, max(end, have + READ_AHEAD))
        self.data.extend(self.fetch(have, stop))

    def skip_strings(self, count: int, what: str) -> None:
        # the fast path of gguf.py matches _CHUNK strings in place: only over bytes already here
        match = _short_strings().match
        window = _CHUNK * (8 + 255)
        i = 0
        while i < count:
            if count - i >= _CHUNK and len(self.buf) - self.pos >= window:
                m = match(self.buf, self.pos)
                if m is not None:
                    self.pos, i = m.end(), i + _CHUNK
                    continue
            for _ in range(min(count, i + _CHUNK) - i):
                at = self.pos
                n = self.u64(f"length of string {i} of {what}")
                if n > self.size - self.pos:
                    self.fail(f"string {i} of {what} runs past the end of the file", at)
                self.take(n, what)
                i += 1


# --- reading one file ------------------------------------------------------------------------
@dataclass
class Fetched:
    header: GGUFHeader
    header_bytes: bytes
    url: str


class Reader:
    def __init__(self, http: Http, ref_text: str, hf_repo: str | None, endpoint: str) -> None:
        self.http, self.ref_text, self.hf_repo, self.endpoint = (
            http,
            ref_text,
            hf_repo,
            endpoint,
        )

    def header(self, url: str, display: str) -> Fetched:
        first = self._range(url, 0, READ_AHEAD, display, first=True)
        size = first[1]
        if size == 0:
            raise RemoteError(f"{display}: empty file, not a GGUF model")

        def fetch(start: int, stop: int) -> bytes:
            data, _ = self._range(url, start, stop, display)
            return data

        parser = _RangeParser(display, fetch, first[0], size)
        try:
            header = parser.header()
        except GGUFError as e:
            if e.offset == 0 and first[0][:1] == b"<":
                e.message += (
                    "; the URL serves a web page, not the file (on Hugging Face the "
                    "file's link has resolve/ where the page's has blob/)"
                )
            raise
        return Fetched(header, bytes(parser.buf[: header.data_offset]), url)

    def _range(self, url: str, start: int, stop: int, display: str, first: bool = False) -> tuple[bytes, int]:
        want = stop - start
        resp = self.http.get(url, start=start, end=stop, limit=want, what=display)
        if resp.status in (401, 403):
            raise RemoteError(self._denied(display, resp.status))
        if resp.status == 404:
            raise RemoteError(f"{display}: not found (HTTP 404)" + self._hint_404())
        if resp.status == 416 and first:
            return b"", 0
        if resp.status == 200:
            length = _int(resp.headers.get("Content-Length"))
            if first and length is not None and length == len(resp.body) <= want:
                return resp.body, length  # a file smaller than one chunk, sent whole
            raise RemoteError(
                f"{display}: the server ignores HTTP Range requests (it answered 200 "
                "with the whole file); vramc reads only headers and does not "
                "download models: download the file and run `vramc analyze FILE`"
            )
        if resp.status != 206:
            raise RemoteError(f"{display}: HTTP {resp.status} from {_host(resp.url)}")
        m = re.match(
            r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$",
            resp.headers.get("Content-Range") or "",
        )
        if not m:
            raise RemoteError(
                f"{display}: the server's Content-Range {resp.headers.get('Content-Range')!r} gives no file size"
            )
        a, b, total = int(m[1]), int(m[2]), int(m[3])
        if a != start or b < a or b >= total or b - a + 1 > want:
            raise RemoteError(f"{display}: the server sent bytes {a}-{b} of {total} when asked for {start}-{stop - 1}")
        if len(resp.body) != b - a + 1:
            # a body cut short: try again once more through the retry loop
            data, size = self._retry_range(url, start, stop, display, b - a + 1)
            return data, size
        if b + 1 < min(stop, total):
            raise RemoteError(
                f"{display}: the server sent bytes {a}-{b} of {total}, fewer than asked ({start}-{stop - 1})"
            )
        return resp.body, total

    def _retry_range(self, url, start, stop, display, expected) -> tuple[bytes, int]:
        for _ in range(self.http.attempts - 1):
            resp = self.http.get(url, start=start, end=stop, limit=stop - start, what=display)
            if resp.status == 206 and len(resp.body) == expected:
                m = re.match(
                    r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$",
                    resp.headers.get("Content-Range") or "",
                )
                if m and int(m[1]) == start:
                    return resp.body, int(m[3])
        raise RemoteError(
            f"{display}: the server's answers were cut short (expected {expected} "
            f"bytes at byte {start}, tried {self.http.attempts} times)"
        )

    def _denied(self, display: str, status: int) -> str:
        if self.hf_repo:
            page = f"{self.endpoint}/{self.hf_repo}"
            if self.http.token:
                return (
                    f"{display}: access denied (HTTP {status}) with the token in HF_TOKEN: the "
                    f"repository is gated or private; accept its terms at {page} with the "
                    "account of that token, or use a token with read access to it"
                )
            return (
                f"{display}: access denied (HTTP {status}): the repository is gated or "
                f"private; accept its terms at {page}, create a read token at "
                f"{self.endpoint}/settings/tokens and set HF_TOKEN to it"
            )
        return f"{display}: access denied (HTTP {status}); for a Hugging Face URL set HF_TOKEN to a token with access"

    def _hint_404(self) -> str:
        if self.hf_repo:
            return f": check the repository and file name; `vramc analyze hf://{self.hf_repo}` lists its GGUF files"
        return ""


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _split_name(name: str) -> tuple[str, int, int] | None:
    m = _SPLIT_RE.match(name)
    return (m["prefix"], int(m["no"]), int(m["count"])) if m else None


# --- Hugging Face ----------------------------------------------------------------------------
def hf_endpoint() -> str:
    endpoint = (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise RemoteError(f"HF_ENDPOINT={endpoint!r}: give an http(s):// URL")
    return endpoint


def _hub_hosts() -> set[str]:
    hosts = {"huggingface.co", "hf.co"}
    endpoint = os.environ.get("HF_ENDPOINT")
    if endpoint:
        hosts.add(urlsplit(endpoint).netloc)
    return hosts


def list_repo(
    http: Http, endpoint: str, repo: str, revision: str, display: str, notes: list[str] | None = None
) -> tuple[str, list[str]]:
    """The commit `revision` names and the repository's files at it, cached under $VRAMC_CACHE/remote
    by endpoint, repository and revision: a commit's listing never changes and is not asked again;
    a branch's (main) is asked each time online, and offline (or with no network) the last answer
    is used and `notes` gets a line saying which commit that answer was of."""
    pinned = re.match(r"^[0-9a-f]{40}$", revision) is not None
    key = f"listing\0{endpoint}\0{repo}\0{revision}"
    if pinned and (hit := _listing_from_cache(key)) is not None:
        return hit
    try:
        if _offline():
            raise _Offline("offline (VRAMC_OFFLINE or HF_HUB_OFFLINE is set)")
        sha, files = _list_repo_online(http, endpoint, repo, revision, display)
    except _Offline as e:
        hit = _listing_from_cache(key)
        if hit is None:
            raise _NotCached(
                f"{display}: {e}, and no listing of {repo} at {revision} is cached under $VRAMC_CACHE; run once online"
            ) from None
        if notes is not None:
            notes.append(f"{display}: {e}: used the cached listing of {repo} at commit {hit[0]} ({revision} then)\n")
        return hit
    _cache_put(key, {"sha": sha, "files": files})
    if sha != revision and re.match(r"^[0-9a-f]{40}$", sha):
        _cache_put(f"listing\0{endpoint}\0{repo}\0{sha}", {"sha": sha, "files": files})
    return sha, files


def _listing_from_cache(key: str) -> tuple[str, list[str]] | None:
    doc = _cache_get(key)
    if doc is None:
        return None
    sha, files = doc.get("sha"), doc.get("files")
    if not isinstance(sha, str) or not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None  # damaged: as if absent
    return sha, [f for f in files if f.isprintable() and 0 < len(f) <= 1000]


def _list_repo_online(http: Http, endpoint: str, repo: str, revision: str, display: str) -> tuple[str, list[str]]:
    url = f"{endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
    resp = http.get(url, limit=MAX_JSON, what=display)
    if resp.status in (401, 403):
        raise RemoteError(Reader(http, display, repo, endpoint)._denied(display, resp.status))
    if resp.status == 404:
        raise RemoteError(
            f"{display}: no repository {repo} at revision {revision} on "
            f"{_host(endpoint)} (HTTP 404); a private one needs HF_TOKEN"
        )
    if resp.status != 200:
        raise RemoteError(f"{display}: HTTP {resp.status} listing {repo}")
    if len(resp.body) > MAX_JSON:
        raise RemoteError(f"{display}: the repository listing is over {MAX_JSON} bytes")
    try:
        doc = json.loads(resp.body)
        sha = doc.get("sha")
        files = [s["rfilename"] for s in doc.get("siblings", [])]
    except (ValueError, AttributeError, TypeError, KeyError):
        raise RemoteError(f"{display}: {url} did not answer with a repository listing") from None
    if not all(isinstance(f, str) for f in files):
        raise RemoteError(f"{display}: {url} did not answer with a repository listing")
    # names that could not be a file (control characters, absurd lengths) are not listed or used
    files = [f for f in files if f.isprintable() and 0 < len(f) <= 1000]
    if not isinstance(sha, str) or not re.match(r"^[0-9a-f]{40}$", sha):
        sha = revision
    return sha, files


def is_model_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.endswith(".gguf") and not any(k in name for k in _NOT_MODELS)


_TAG_RE = re.compile(r"[-.]([A-Za-z0-9_]+)$")  # llama.cpp get_gguf_split_info's tag
_STEM_SPLIT_RE = re.compile(r"^(.+)-(\d{5})-of-(\d{5})$")


def quant_tag(path: str) -> str:
    """The quant a file name ends with, upper case, as llama.cpp reads it (common/download.cpp)."""
    stem = path.rsplit("/", 1)[-1].removesuffix(".gguf")
    m = _STEM_SPLIT_RE.match(stem)
    stem = m[1] if m else stem
    m = _TAG_RE.search(stem)
    return m[1].upper() if m else stem


def first_parts(files: list[str]) -> list[str]:
    """The model files of a listing, each split model by its first part only."""
    models = [f for f in files if is_model_file(f)]
    return [f for f in models if (_split_name(f.rsplit("/", 1)[-1]) or ("", 1, 1))[1] == 1]


def pick_quant(files: list[str], quant: str | None, display: str) -> str:
    """The first part of the one model file of `quant` (llama.cpp's `-hf` match), or an error."""
    firsts = first_parts(files)
    listing = "\n".join(f"  {f}" for f in sorted(firsts)) or "  (no GGUF model files)"
    if quant is None:
        if len(firsts) == 1:
            return firsts[0]
        raise RemoteError(
            f"{display}: name the quant (hf://ORG/REPO:QUANT) or the file "
            f"(hf://ORG/REPO/FILE.gguf); `vramc plan PROFILE --quants hf://ORG/REPO` "
            f"compares them on your GPUs, and `vramc analyze hf://ORG/REPO --write PROFILE` locks them "
            f"all for `quant: auto`; the GGUF model files there are:\n{listing}"
        )
    pattern = re.compile(re.escape(quant) + r"[.-]", re.IGNORECASE)
    hits = [f for f in firsts if pattern.search(f)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise RemoteError(f"{display}: no GGUF model file of quant {quant}; the files there are:\n{listing}")
    listing = "\n".join(f"  {f}" for f in hits)
    raise RemoteError(
        f"{display}: {len(hits)} files match quant {quant}; name one as hf://ORG/REPO/FILE.gguf:\n{listing}"
    )


# --- the cache -------------------------------------------------------------------------------
def _cache_path(key: str):
    from vramc.cache import cache_root

    return cache_root() / "remote" / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def _cache_get(key: str) -> dict | None:
    from vramc.cache import enabled, read_entry

    if not enabled():
        return None
    text = read_entry(_cache_path(key))
    if text is None:
        return None
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, dict) else None
    except ValueError:
        return None


def _cache_put(key: str, doc: dict) -> None:
    from vramc.cache import enabled, write_entry

    if enabled():
        _cache_path(key).parent.mkdir(parents=True, exist_ok=True)
        write_entry(_cache_path(key), json.dumps(doc, sort_keys=True))


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0", "false") for v in ("VRAMC_OFFLINE", "HF_HUB_OFFLINE"))


def _header_from_cache(doc: dict, display: str) -> GGUFHeader:
    try:
        data, size = (
            base64.b64decode(doc["header"], validate=True),
            int(doc["file_size"]),
        )
    except (KeyError, TypeError, ValueError):
        raise RemoteError(f"{display}: the cached header is damaged; run again online") from None

    def no_fetch(start: int, stop: int) -> bytes:
        raise RemoteError(f"{display}: the cached header is incomplete; run again online")

    return _RangeParser(display, no_fetch, data, size).header()


# --- the whole model -------------------------------------------------------------------------
@dataclass
class RemoteModel:
    meta: ModelMeta
    source: str  # the URL or hf:// reference, pinned to the commit when there is one
    revision: str | None  # the commit (Hugging Face), or None
    file_name: str  # the first part's file name
    urls: list[str]  # where every part is
    transferred: int = 0  # bytes received over the network
    requests: int = 0
    cached: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. the repository listing came from the cache


def read_remote(text: str, *, http: Http | None = None) -> RemoteModel:
    """The model a URL or hf:// reference names, from its header(s) alone."""
    ref = parse_ref(text)
    endpoint = hf_endpoint() if ref.repo else ""
    token = os.environ.get("HF_TOKEN") or None
    if ref.url and urlsplit(ref.url).netloc not in _hub_hosts():
        token = None  # the Hugging Face token is for the Hub, not for any URL
    http = http or Http(token=token)
    ref_key = f"ref\0{endpoint}\0{ref.text}"
    notes: list[str] = []
    try:
        if _offline():
            raise _Offline("offline (VRAMC_OFFLINE or HF_HUB_OFFLINE is set)")
        model = _online(http, ref, endpoint, ref_key, notes)
    except _Offline as e:  # no network: the last answer for the same reference, if any
        model = _from_cache(http, ref, endpoint, ref_key, notes, e)
    model.notes = notes
    return model


def _from_cache(http: Http, ref: Ref, endpoint: str, ref_key: str, notes: list[str], e: _Offline) -> RemoteModel:
    text = ref.text
    cached = _cache_get(ref_key)
    if cached is None:
        if ref.repo is not None:
            # the repository's listing and the headers at its commit are cached apart: another
            # reference to the same repository (hf://ORG/REPO --write, another :QUANT) read them
            try:
                model = _online(http, ref, endpoint, ref_key, notes)
            except _Offline:
                pass
            else:
                model.cached = True
                return model
        if isinstance(e, _NotCached):  # already names the reference and what the cache lacks
            raise RemoteError(str(e)) from None
        raise RemoteError(f"{text}: {e}, and no header of it is cached under $VRAMC_CACHE; run once online") from None
    try:
        parts = [_header_from_cache(d, text) for d in cached["parts"]]
        model = _model(
            parts,
            cached["source"],
            cached.get("revision"),
            cached["file_name"],
            cached["urls"],
            text,
        )
    except (KeyError, TypeError, AttributeError):
        raise RemoteError(f"{text}: {e}, and its cached header is damaged; run once online") from None
    model.cached = True
    return model


def _online(http: Http, ref: Ref, endpoint: str, ref_key: str, notes: list[str]) -> RemoteModel:
    text = ref.text
    received = http.transferred
    source, revision, file_name, urls = _resolve(http, ref, endpoint, notes)
    reader = Reader(http, text, ref.repo, endpoint)
    fetched: list[Fetched] = []
    first = _cached_or_fetch(reader, urls[0], source, revision)
    fetched.append(first)
    count = first.header.kv.get("split.count", 1)
    if isinstance(count, int) and count > 1:
        split = _split_name(urls[0].rsplit("/", 1)[-1].split("?")[0])
        if not split or split[2] != count or split[1] != 1:
            raise RemoteError(
                f"{text}: the header says the model is split into {count} parts, but "
                f"the name does not end in -00001-of-{count:05d}.gguf, so the other "
                "parts cannot be found"
            )
        base = urls[0].rsplit("/", 1)[0]
        urls = [f"{base}/{split[0]}-{no:05d}-of-{count:05d}.gguf" for no in range(1, count + 1)]
        for url in urls[1:]:
            fetched.append(_cached_or_fetch(reader, url, source, revision))
    parts = [f.header for f in fetched]
    model = _model(parts, source, revision, file_name, urls, text)
    _cache_put(
        ref_key,
        {
            "source": source,
            "revision": revision,
            "file_name": file_name,
            "urls": urls,
            "parts": [_entry(f) for f in fetched],
        },
    )
    model.transferred, model.requests = http.transferred, http.requests
    model.cached = bool(notes) and http.transferred == received  # the network answered nothing
    return model


def _entry(f: Fetched) -> dict:
    return {
        "header": base64.b64encode(f.header_bytes).decode(),
        "file_size": f.header.file_size,
    }


def _cached_or_fetch(reader: Reader, url: str, source: str, revision: str | None) -> Fetched:
    # a header at a commit never changes: a pinned URL read before is not read again
    key = f"url\0{url}"
    if revision is not None:
        doc = _cache_get(key)
        if doc is not None:
            try:
                return Fetched(_header_from_cache(doc, url), base64.b64decode(doc["header"]), url)
            except (RemoteError, GGUFError):
                pass
    fetched = reader.header(url, url if reader.hf_repo is None else source)
    if revision is not None:
        _cache_put(key, _entry(fetched))
    return fetched


def _model(
    parts: list[GGUFHeader],
    source: str,
    revision: str | None,
    file_name: str,
    urls: list[str],
    display: str,
) -> RemoteModel:
    if not parts:
        raise RemoteError(f"{display}: the cached entry holds no header; run again online")
    count = parts[0].kv.get("split.count", 1)
    if isinstance(count, int) and count > 1:
        check_parts(parts, count)
    return RemoteModel(meta_of_parts(parts), source, revision, file_name, urls)


def _resolve(http: Http, ref: Ref, endpoint: str, notes: list[str]) -> tuple[str, str | None, str, list[str]]:
    """(source, commit, file name, [url of the first part])."""
    if ref.url:
        name = urlsplit(ref.url).path.rsplit("/", 1)[-1] or "model.gguf"
        return ref.url, None, name, [ref.url]
    assert ref.repo is not None
    commit, files = list_repo(http, endpoint, ref.repo, ref.revision, ref.text, notes)
    if ref.file is not None:
        if ref.file not in files:
            near = "\n".join(f"  {f}" for f in sorted(files) if is_model_file(f)) or "  (none)"
            raise RemoteError(f"{ref.text}: {ref.file} is not in {ref.repo}; its GGUF model files are:\n{near}")
        file = ref.file
    else:
        file = pick_quant(files, ref.quant, ref.text)
    url = f"{endpoint}/{ref.repo}/resolve/{commit}/{quote(file)}"
    source = f"hf://{ref.repo}@{commit}/{file}"
    return source, commit, file.rsplit("/", 1)[-1], [url]


def note(model: RemoteModel) -> str:
    how = "from the cache (offline)" if model.cached else f"{model.transferred:,} bytes in {model.requests} requests"
    return "".join(model.notes) + f"{model.source}: header read {how}\n"
