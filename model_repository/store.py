"""Model repositories in S3-compatible object storage: the URL Triton reads one from, and the store as
`tritonize publish` (publish.py) and a server starting on it (`stored_models`) see it.

The store holds the local layout under s3://BUCKET/PREFIX/ (`<model>/config.pbtxt`, `<model>/<version>/...`),
one claim object per published version number (`<model>/<version>.claim`: a file, so Triton, which reads
version folders, never sees it), and its own index, `repository.json`. The guarantees, and the tests that hold
them, are in docs/design.md ("The store as a fault domain").

Every call is bounded: a store that refuses connections fails at once, one that accepts them and then says
nothing (a paused process, a black-holed route) fails after `timeout_s` per attempt, two attempts. Every
botocore failure becomes one StoreError line.
"""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping, Protocol
from urllib.parse import urlsplit

from ..artifacts import INDEX_FILE, now_iso
from .contents import SEGMENT, LocalFile

STORE_FORMAT = "tritonize-store/1"
# Triton's regex for s3://HOST:PORT/BUCKET/PATH takes these hosts and buckets (and contents.SEGMENT for each
# path segment); outside it, Triton reads the path as s3://BUCKET/... and silently loses the endpoint.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's naming rules, within Triton's
_HOST = re.compile(r"[0-9A-Za-z.-]+")


class StoreError(ValueError):
    """A bad URL, endpoint, credentials, bucket or store (contents.RepositoryError is the local side): what was
    expected and what was given, in one line. A ValueError, so the CLI shows it as a user error (exit 2)."""


class StoreConflict(StoreError):
    """A conditional write refused: another publish wrote the same key since this one looked."""


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
    return triton_url(parse_s3_url(s3_url), resolve_endpoint(endpoint_url, environ))


def triton_url(location: S3Location, endpoint: Endpoint | None) -> str:
    if endpoint is None:
        return location.url
    scheme = "https://" if endpoint.scheme == "https" else ""  # Triton's default is http
    return f"s3://{scheme}{endpoint.host}:{endpoint.port}/{location.url[len('s3://'):]}"


def s3_client(endpoint: Endpoint | None, timeout_s: float = 5.0, transfer_timeout_s: float = 30.0):
    """A boto3 S3 client: credentials from the standard AWS environment, short timeouts and one retry, so an
    unreachable or silent endpoint fails in seconds rather than after botocore's default minutes.
    `timeout_s` bounds the connection; `transfer_timeout_s` each wait for an answer once connected (a large
    upload's answer comes after its last byte, so publish gives it longer than a listing needs)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise StoreError("no AWS credentials: expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                         "in the environment, got none")
    config = Config(connect_timeout=timeout_s, read_timeout=max(transfer_timeout_s, timeout_s),
                    retries={"mode": "standard", "total_max_attempts": 2},
                    # Path-style, as Triton reads: a custom endpoint (an IP, localhost) has no per-bucket host names.
                    s3={"addressing_style": "path" if endpoint else "auto"})
    return session.client("s3", endpoint_url=endpoint.url if endpoint else None, config=config)


class UploadProgress(Protocol):
    def start_file(self, key: str, size: int) -> None: ...
    def sent(self, nbytes: int) -> None: ...
    def end_file(self, key: str) -> None: ...


CLAIM_SUFFIX = ".claim"


def claim_key(model: str, version: int) -> str:
    """The claim object's name, relative to the prefix (see the module docstring)."""
    return f"{model}/{version}{CLAIM_SUFFIX}"


class Store:
    """One bucket and prefix through one client, every botocore failure turned into a one-line StoreError."""

    def __init__(self, client, location: S3Location, endpoint: Endpoint | None, timeout_s: float):
        self.client, self.location, self.endpoint, self.timeout = client, location, endpoint, timeout_s
        self.where = f"{location.url} at {endpoint.url if endpoint else 'AWS'}"

    @classmethod
    def open(cls, s3_url: str, endpoint_url: str | None = None, timeout_s: float = 5.0,
             transfer_timeout_s: float = 30.0, client=None) -> "Store":
        location, endpoint = parse_s3_url(s3_url), resolve_endpoint(endpoint_url)
        return cls(client or s3_client(endpoint, timeout_s, transfer_timeout_s), location, endpoint, timeout_s)

    def call(self, what: str, method: str, conflict: str = "", **kwargs):
        """`client.method(**kwargs)`; `conflict` is the message of a refused conditional write (StoreConflict)."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        try:
            return getattr(self.client, method)(**kwargs)
        except (EndpointConnectionError, ConnectTimeoutError) as e:
            raise StoreError(f"{what}: expected a reachable S3 endpoint, got no answer within "
                             f"{self.timeout:g} s ({e})") from None
        except ReadTimeoutError:
            raise StoreError(f"{what}: expected an answer, got none within {self.client.meta.config.read_timeout:g} s "
                             f"twice (the endpoint accepts connections but does not answer)") from None
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            if method == "head_bucket" and code in ("404", "NoSuchBucket"):
                raise StoreError(f"{what}: expected an existing bucket, got no bucket {self.location.bucket!r} "
                                 f"(create it first)") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreError(f"{what}: access denied ({code}); expected credentials allowed to list, read and "
                                 f"write {self.location.url}") from None
            if conflict and code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise StoreConflict(f"{what}: {conflict}") from None
            raise StoreError(f"{what}: {code} {error.get('Message', '')}".rstrip()) from None
        except (BotoCoreError, Boto3Error) as e:  # Boto3Error: upload_file's S3UploadFailedError
            raise StoreError(f"{what}: {e}") from None

    def url_of(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

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
        got = self.call(f"reading {self.url_of(key)}", "get_object", Bucket=self.location.bucket, Key=key)
        try:
            index = json.loads(got["Body"].read())
        except (ValueError, UnicodeDecodeError):
            index = None
        if isinstance(index, dict) and index.get("format") == STORE_FORMAT and isinstance(index.get("models"), dict):
            return index, got.get("ETag")
        if isinstance(index, dict) and {"target", "models"} <= index.keys():
            return fresh, got.get("ETag")
        raise StoreError(f"{self.url_of(key)}: expected a tritonize index (format {STORE_FORMAT!r}), "
                         f"got another file; remove it or publish to another prefix")

    def claim(self, model: str, version: int, digest: str) -> str:
        """Take `version` of `model` for this publish, or raise StoreConflict when another publish has it.
        A create-only write (If-None-Match: *, which S3 and moto honour), so of two publishes that chose the
        same number, exactly one gets it. Returns the claim's key."""
        key = self.location.key(claim_key(model, version))
        body = {"model": model, "version": version, "sha256": digest, "claimed": now_iso(),
                "by": f"{socket.gethostname()}:{os.getpid()}"}
        self.call(f"claiming version {version} of model {model!r} ({self.url_of(key)})", "put_object",
                  conflict="expected the number free, got it claimed by another publish since this one listed "
                           "the store; nothing of this publish was uploaded: publish again",
                  Bucket=self.location.bucket, Key=key, Body=(json.dumps(body) + "\n").encode(),
                  ContentType="application/json", IfNoneMatch="*")
        return key

    def release(self, key: str) -> None:
        """Give back a claim this publish made and did not use (best effort: a claim left behind only skips
        a number)."""
        try:
            self.call(f"releasing {self.url_of(key)}", "delete_object", Bucket=self.location.bucket, Key=key)
        except StoreError:
            pass

    def upload(self, file: LocalFile | None, key: str, progress: UploadProgress | None) -> None:
        what = f"uploading {self.url_of(key)}"
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
        """Write the index over the one read (ETag `etag`; None: over none). StoreConflict when another
        publish wrote it meanwhile: the caller reads it again and merges (publish.py)."""
        key = self.location.key(INDEX_FILE)
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        self.call(f"writing {self.url_of(key)}", "put_object",
                  conflict="expected the index as it was read, got it changed meanwhile (another publish?)",
                  Bucket=self.location.bucket, Key=key, Body=(json.dumps(index, indent=2) + "\n").encode(),
                  ContentType="application/json", **condition)


def stored_models(s3_url: str, endpoint_url: str | None = None, timeout_s: float = 5.0, client=None) -> list[str]:
    """The models `tritonize publish` put at s3://BUCKET/PREFIX, from the store's index: what a server started
    on the store loads (its model control is explicit, so it needs the names). A store that cannot be reached
    or does not answer is a StoreError within about 2 x `timeout_s` per call: a server never starts on it."""
    store = Store.open(s3_url, endpoint_url, timeout_s, transfer_timeout_s=timeout_s, client=client)
    objects = store.listing()
    index, _ = store.read_index(objects)
    if not index["models"]:
        raise StoreError(f"{store.location.url}: expected a repository published with `tritonize publish`, got "
                         f"{'no objects' if not objects else 'no tritonize index (repository.json)'} there")
    return sorted(index["models"])
