"""Model repositories in S3-compatible object storage: `tritonize publish`, and the URL Triton reads one from.

The store holds the local layout under s3://BUCKET/PREFIX/ (`<model>/config.pbtxt`, `<model>/<version>/...`)
and its own index, `repository.json`: per model, the published versions with the SHA-256 of each file and
of the whole version, and the SHA-256 of the config. Three rules, each for a server reading the store:

- A version in the store is never written again. A server may have loaded it, or be downloading it; a
  changed model goes up under a new number (N+1), which Triton's default version policy (latest 1) serves
  once it loads, while the old number stays as it was. Identical content is found by its digests and skipped.
- Within a model, version files go up first, then the model-level files, `config.pbtxt` last: a new model
  appears to a polling server (which needs the config) only once it is complete. A new version of a model
  already loaded is seen as its files arrive (Triton's POLL mode does not synchronize with writers): a reload
  that fails on a half-uploaded version leaves the loaded one serving until a later poll sees it whole.
- The index goes up last, once per publish, so it records only what is complete in the store.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Protocol
from urllib.parse import urlsplit

from ..artifacts import INDEX_FILE, now_iso
from .contents import SEGMENT, VERSION, LocalFile, assign_versions, read_local_repository

STORE_FORMAT = "tritonize-store/1"
# Triton's regex for s3://HOST:PORT/BUCKET/PATH takes these hosts and buckets (and contents.SEGMENT for each
# path segment); outside it, Triton reads the path as s3://BUCKET/... and silently loses the endpoint.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's naming rules, within Triton's
_HOST = re.compile(r"[0-9A-Za-z.-]+")


class StoreError(ValueError):
    """A bad URL, endpoint, credentials, bucket or store (contents.RepositoryError is the local side): what was
    expected and what was given, in one line. A ValueError, so the CLI shows it as a user error (exit 2)."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" for the bucket's root; never a leading or trailing slash

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


@dataclass(frozen=True)
class Endpoint:
    url: str  # as configured, without a trailing slash
    scheme: str  # http or https
    host: str
    port: int  # the scheme's default when the URL has none: Triton needs one written out


def parse_s3_url(url: str) -> S3Location:
    expected = "expected s3://BUCKET/PREFIX"
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise StoreError(f"{expected}, got {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if ":" in bucket:
        raise StoreError(f"{expected} (the endpoint comes from --endpoint-url or AWS_ENDPOINT_URL), got {url!r}")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise StoreError(f"{expected} with a bucket name of 3-63 lowercase letters, digits, '.' and '-', "
                         f"got bucket {bucket!r} in {url!r}")
    segments = prefix.rstrip("/").split("/") if prefix.rstrip("/") else []
    for s in segments:
        if not SEGMENT.fullmatch(s) or s in (".", ".."):
            raise StoreError(f"{expected} with a prefix of names made of letters, digits, '.', '_' and '-' (what "
                             f"Triton reads from a custom endpoint), got {s!r} in {url!r}")
    return S3Location(bucket, "/".join(segments))


def parse_endpoint(url: str, source: str = "--endpoint-url") -> Endpoint:
    expected = f"{source}: expected http://HOST[:PORT] or https://HOST[:PORT]"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise StoreError(f"{expected}, got {url!r} ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"{expected}, got {url!r}")
    if parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise StoreError(f"{expected} with no credentials, path or query (Triton's S3 URL has room for none), "
                         f"got {url!r}")
    if not _HOST.fullmatch(parts.hostname):
        raise StoreError(f"{expected} with a host name or IPv4 address (what Triton's S3 URL takes), got {url!r}")
    return Endpoint(url.rstrip("/"), parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


def resolve_endpoint(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Endpoint | None:
    """The custom S3 endpoint: `explicit`, else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (the AWS SDKs'
    order, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS honoured); None for AWS's own."""
    env = os.environ if environ is None else environ
    if explicit:
        return parse_endpoint(explicit)
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if env.get(name):
            return parse_endpoint(env[name], name)
    return None


def triton_repository_url(s3_url: str, endpoint_url: str | None = None,
                          environ: Mapping[str, str] | None = None) -> str:
    """`--model-repository` for tritonserver: s3://BUCKET/PREFIX as Triton reads it. With a custom endpoint
    (`endpoint_url`, else the environment's) that is s3://HOST:PORT/BUCKET/PREFIX, or s3://https://HOST:PORT/...
    for https; without one, the URL as given (AWS's endpoint, region from AWS_DEFAULT_REGION)."""
    return _triton_url(parse_s3_url(s3_url), resolve_endpoint(endpoint_url, environ))


def _triton_url(location: S3Location, endpoint: Endpoint | None) -> str:
    if endpoint is None:
        return location.url
    scheme = "https://" if endpoint.scheme == "https" else ""  # Triton's default is http
    return f"s3://{scheme}{endpoint.host}:{endpoint.port}/{location.url[len('s3://'):]}"


def s3_client(endpoint: Endpoint | None, connect_timeout_s: float = 5.0):
    """A boto3 S3 client: credentials from the standard AWS environment, short timeouts and one retry, so an
    unreachable endpoint fails in seconds rather than after botocore's default minutes."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise StoreError("no AWS credentials: expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                         "in the environment, got none")
    config = Config(connect_timeout=connect_timeout_s, read_timeout=max(30.0, connect_timeout_s),
                    retries={"mode": "standard", "total_max_attempts": 2},
                    # Path-style, as Triton reads: a custom endpoint (an IP, localhost) has no per-bucket host names.
                    s3={"addressing_style": "path" if endpoint else "auto"})
    return session.client("s3", endpoint_url=endpoint.url if endpoint else None, config=config)


class UploadProgress(Protocol):
    def start_file(self, key: str, size: int) -> None: ...
    def sent(self, nbytes: int) -> None: ...
    def end_file(self, key: str) -> None: ...


@dataclass(frozen=True)
class VersionResult:
    model: str
    version: str  # the number in the store, or "config" for the model-level files
    local_version: str
    status: Literal["uploaded", "unchanged"]
    bytes: int  # the size of what this row holds in the store; uploaded only when status is "uploaded"


@dataclass(frozen=True)
class PublishResult:
    location: S3Location
    endpoint: str | None
    triton_url: str  # --model-repository for tritonserver
    rows: tuple[VersionResult, ...]
    uploaded_bytes: int
    index_key: str
    index_written: bool  # False when nothing changed: the index was left as it was


class _Store:
    """One bucket and prefix through one client, every botocore failure turned into a one-line StoreError."""

    def __init__(self, client, location: S3Location, endpoint: Endpoint | None, connect_timeout_s: float):
        self.client, self.location, self.timeout = client, location, connect_timeout_s
        self.where = f"{location.url} at {endpoint.url if endpoint else 'AWS'}"

    def call(self, what: str, method: str, **kwargs):
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

        try:
            return getattr(self.client, method)(**kwargs)
        except (EndpointConnectionError, ConnectTimeoutError) as e:
            raise StoreError(f"{what}: expected a reachable S3 endpoint, got no answer within "
                             f"{self.timeout:g} s ({e})") from None
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            if method == "head_bucket" and code in ("404", "NoSuchBucket"):
                raise StoreError(f"{what}: expected an existing bucket, got no bucket {self.location.bucket!r} "
                                 f"(create it first)") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreError(f"{what}: access denied ({code}); expected credentials allowed to list, read and "
                                 f"write {self.location.url}") from None
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):  # only the index is written on a condition
                raise StoreError(f"{what}: expected the index as it was read, got it changed meanwhile (another "
                                 f"publish?); publish again") from None
            raise StoreError(f"{what}: {code} {error.get('Message', '')}".rstrip()) from None
        except (BotoCoreError, Boto3Error) as e:  # Boto3Error: upload_file's S3UploadFailedError
            raise StoreError(f"{what}: {e}") from None

    def listing(self) -> dict[str, int]:
        """Key -> size, every object under the prefix."""
        self.call(f"checking {self.where}", "head_bucket", Bucket=self.location.bucket)
        objects, token = {}, None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self.call(f"listing {self.where}", "list_objects_v2", Bucket=self.location.bucket,
                             Prefix=self.location.key("") + "/" if self.location.prefix else "", **extra)
            objects.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
            if not page.get("IsTruncated"):
                return objects
            token = page["NextContinuationToken"]

    def read_index(self, objects: Mapping[str, int]) -> tuple[dict, str | None]:
        """The store's index and its ETag; a fresh one when there is none, or only a local repository's
        (copied up by hand): then no version counts as known, so none is overwritten."""
        key, fresh = self.location.key(INDEX_FILE), {"format": STORE_FORMAT, "models": {}}
        if key not in objects:
            return fresh, None
        got = self.call(f"reading s3://{self.location.bucket}/{key}", "get_object", Bucket=self.location.bucket, Key=key)
        try:
            index = json.loads(got["Body"].read())
        except (ValueError, UnicodeDecodeError):
            index = None
        if isinstance(index, dict) and index.get("format") == STORE_FORMAT and isinstance(index.get("models"), dict):
            return index, got.get("ETag")
        if isinstance(index, dict) and {"target", "models"} <= index.keys():
            return fresh, got.get("ETag")
        raise StoreError(f"s3://{self.location.bucket}/{key}: expected a tritonize index (format {STORE_FORMAT!r}), "
                         f"got another file; remove it or publish to another prefix")

    def upload(self, file: LocalFile | None, key: str, progress: UploadProgress | None) -> None:
        what = f"uploading s3://{self.location.bucket}/{key}"
        if file is None:  # S3 has no folders: Triton sees an empty version folder through a "<key>/" object
            self.call(what, "put_object", Bucket=self.location.bucket, Key=key + "/", Body=b"")
            return
        if progress:
            progress.start_file(key, file.size)
        self.call(what, "upload_file", Filename=str(file.path), Bucket=self.location.bucket, Key=key,
                  ExtraArgs={"Metadata": {"sha256": file.sha256}}, Callback=progress.sent if progress else None)
        if progress:
            progress.end_file(key)

    def write_index(self, index: dict, etag: str | None) -> None:
        key = self.location.key(INDEX_FILE)
        # Conditional: when two publishes run at once, the second index write fails instead of hiding the first.
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        self.call(f"writing s3://{self.location.bucket}/{key}", "put_object", Bucket=self.location.bucket, Key=key,
                  Body=(json.dumps(index, indent=2) + "\n").encode(), ContentType="application/json", **condition)


def _stored_versions(location: S3Location, name: str, entry: dict, objects: Mapping[str, int]) -> dict[int, str | None]:
    """Every version number the store holds or held for `name` -> its digest where the index records it and
    all its objects are there, else None."""
    numbers, head = set(), location.key(name) + "/"
    for key in objects:
        parts = key[len(head):].split("/") if key.startswith(head) else []
        if len(parts) >= 2 and VERSION.fullmatch(parts[0]):
            numbers.add(int(parts[0]))
    # A number the index records counts as taken even with its objects gone: a server may still hold it.
    stored: dict[int, str | None] = dict.fromkeys(numbers | {int(n) for n in entry.get("versions", {})})
    for number, record in entry.get("versions", {}).items():
        files = record.get("files", {})
        keys = {location.key(name, number, rel): f.get("bytes") for rel, f in files.items()} or {
            location.key(name, number) + "/": 0}
        if all(objects.get(k) == size for k, size in keys.items()):
            stored[int(number)] = record.get("sha256")
    return stored


def stored_models(s3_url: str, endpoint_url: str | None = None, connect_timeout_s: float = 5.0,
                  client=None) -> list[str]:
    """The models `tritonize publish` put at s3://BUCKET/PREFIX, from the store's index: what a server started
    on the store loads (its model control is explicit, so it needs the names)."""
    location = parse_s3_url(s3_url)
    endpoint = resolve_endpoint(endpoint_url)
    store = _Store(client or s3_client(endpoint, connect_timeout_s), location, endpoint, connect_timeout_s)
    objects = store.listing()
    index, _ = store.read_index(objects)
    if not index["models"]:
        raise StoreError(f"{location.url}: expected a repository published with `tritonize publish`, got "
                         f"{'no objects' if not objects else 'no tritonize index (repository.json)'} there")
    return sorted(index["models"])


def publish(repository: Path, s3_url: str, endpoint_url: str | None = None, progress: UploadProgress | None = None,
            connect_timeout_s: float = 5.0, client=None) -> PublishResult:
    """Upload a local model repository to s3://BUCKET/PREFIX (see the module's docstring for the rules)."""
    location = parse_s3_url(s3_url)
    models = read_local_repository(repository)  # every local problem is found before the network is touched
    endpoint = resolve_endpoint(endpoint_url)
    store = _Store(client or s3_client(endpoint, connect_timeout_s), location, endpoint, connect_timeout_s)
    objects = store.listing()
    index, etag = store.read_index(objects)
    # The whole plan first, so a refusal comes before anything is uploaded.
    plans = []
    for model in models:
        entry = index["models"].setdefault(model.name, {"versions": {}})
        numbers = assign_versions(model.versions, _stored_versions(location, model.name, entry, objects))
        moved = [(v.number, n) for v, (n, unchanged) in zip(model.versions, numbers) if not unchanged and v.number != n]
        if moved and model.pins_versions():
            raise StoreError(f"model {model.name!r}: expected a config.pbtxt without a specific version_policy, got "
                             f"one; local version {moved[0][0]} goes up as {moved[0][1]}, which it would not serve")
        recorded = entry.get("files", {})
        changed = [f for f in model.files if recorded.get(f.relative) != f.record()
                   or objects.get(location.key(model.name, f.relative)) != f.size]
        plans.append((model, entry, numbers, changed))
    rows, uploaded = [], 0
    for model, entry, numbers, changed in plans:
        for local, (number, unchanged) in zip(model.versions, numbers):
            if not unchanged:
                for f in local.files or (None,):
                    store.upload(f, location.key(model.name, str(number), f.relative if f else ""), progress)
                entry["versions"][str(number)] = {
                    "sha256": local.digest, "files": {f.relative: f.record() for f in local.files},
                    "local_version": local.number, "published": now_iso(), "source": model.source}
                uploaded += local.size
            rows.append(VersionResult(model.name, str(number), str(local.number),
                                      "unchanged" if unchanged else "uploaded", local.size))
        for f in changed:  # config.pbtxt is last in model.files, so it goes up last
            store.upload(f, location.key(model.name, f.relative), progress)
        uploaded += sum(f.size for f in changed)
        entry.update(files={f.relative: f.record() for f in model.files}, config_sha256=model.config.sha256,
                     latest=max(int(n) for n in entry["versions"]))
        rows.append(VersionResult(model.name, "config", "config", "uploaded" if changed else "unchanged",
                                  sum(f.size for f in model.files)))
    written = any(r.status == "uploaded" for r in rows)
    if written:
        index["format"], index["updated"] = STORE_FORMAT, now_iso()
        store.write_index(index, etag)
    return PublishResult(location, endpoint.url if endpoint else None, _triton_url(location, endpoint), tuple(rows),
                         uploaded, f"s3://{location.bucket}/{location.key(INDEX_FILE)}", written)
