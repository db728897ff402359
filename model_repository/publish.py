"""`tritonize publish`: a local model repository into the store (store.py), version by version; safe when
another publish runs at the same moment and when this one is killed at any point. Four rules, each for a
server reading the store or a publish beside this one:

- A version in the store is never written again. A server may have loaded it, or be downloading it; a
  changed model goes up under a new number (N+1), which Triton's default version policy (latest 1) serves
  once it loads, while the old number stays as it was. Identical content is found by its digests and skipped.
- Every new number is claimed before anything goes up (`Store.claim`, a create-only write): of two publishes
  that chose the same number, one gets it and the other uploads nothing and says so. A number claimed or
  holding any object counts as taken, so the publish after a killed one goes above it.
- Within a model, version files go up first, then the model-level files, `config.pbtxt` last: a new model
  appears to a polling server (which needs the config) only once it is complete. A new version of a model
  already loaded is seen as its files arrive (Triton's POLL mode does not synchronize with writers): a reload
  that fails on a half-uploaded version leaves the loaded one serving until a later poll sees it whole.
- The index goes up last, over the one read (If-Match), so it names only versions whose every file is in the
  store. When another publish wrote it meanwhile, it is read again and this publish's versions added (their
  numbers are this publish's by claim, so the two never collide).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from ..artifacts import INDEX_FILE, now_iso
from .contents import VERSION, LocalModel, assign_versions, read_local_repository
from .store import (
    CLAIM_SUFFIX,
    STORE_FORMAT,
    S3Location,
    Store,
    StoreConflict,
    StoreError,
    UploadProgress,
    triton_url,
)

INDEX_ATTEMPTS = 5  # index writes lost to other publishes before this one gives up


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


@dataclass(frozen=True)
class ModelPlan:
    model: LocalModel
    numbers: tuple[tuple[int, bool], ...]  # per local version: (its number in the store, unchanged)
    changed: tuple  # the model-level LocalFiles to upload (config.pbtxt last)
    read_files: dict  # the index's records of the model-level files as read: what a merge compares against


@dataclass(frozen=True)
class PublishPlan:
    """What a publish will do, decided from one listing of the store, before anything is written."""
    store: Store
    index: dict  # as read (the merge base)
    etag: str | None  # the index's, as read; None: no index yet
    models: tuple[ModelPlan, ...]


@dataclass(frozen=True)
class _Written:
    """What this publish put in the store for one model, as the index records it."""
    versions: dict  # number -> its record
    files: dict | None  # model-level records; None when they did not change
    config_sha256: str


def stored_versions(location: S3Location, name: str, entry: dict, objects: Mapping[str, int]) -> dict[int, str | None]:
    """Every version number the store holds, held or claimed for `name` -> its digest where the index
    records it and all its objects are there, else None."""
    numbers, head = set(), location.key(name) + "/"
    for key in objects:
        parts = key[len(head):].split("/") if key.startswith(head) else []
        if len(parts) >= 2 and VERSION.fullmatch(parts[0]):
            numbers.add(int(parts[0]))
        elif len(parts) == 1 and parts[0].endswith(CLAIM_SUFFIX) and VERSION.fullmatch(parts[0][:-len(CLAIM_SUFFIX)]):
            numbers.add(int(parts[0][:-len(CLAIM_SUFFIX)]))
    # A number the index records counts as taken even with its objects gone: a server may still hold it.
    stored: dict[int, str | None] = dict.fromkeys(numbers | {int(n) for n in entry.get("versions", {})})
    for number, record in entry.get("versions", {}).items():
        files = record.get("files", {})
        keys = {location.key(name, number, rel): f.get("bytes") for rel, f in files.items()} or {
            location.key(name, number) + "/": 0}
        if all(objects.get(k) == size for k, size in keys.items()):
            stored[int(number)] = record.get("sha256")
    return stored


def plan_publish(repository: Path, s3_url: str, endpoint_url: str | None = None, connect_timeout_s: float = 5.0,
                 client=None) -> PublishPlan:
    """Read the local repository (every local problem before the network is touched), then the store once;
    refuse what cannot go up before anything is written."""
    models = read_local_repository(repository)
    store = Store.open(s3_url, endpoint_url, connect_timeout_s, client=client)
    objects = store.listing()
    index, etag = store.read_index(objects)
    plans = []
    for model in models:
        entry = index["models"].get(model.name, {})
        numbers = assign_versions(model.versions, stored_versions(store.location, model.name, entry, objects))
        moved = [(v.number, n) for v, (n, unchanged) in zip(model.versions, numbers) if not unchanged and v.number != n]
        if moved and model.pins_versions():
            raise StoreError(f"model {model.name!r}: expected a config.pbtxt without a specific version_policy, got "
                             f"one; local version {moved[0][0]} goes up as {moved[0][1]}, which it would not serve")
        recorded = entry.get("files", {})
        changed = tuple(f for f in model.files if recorded.get(f.relative) != f.record()
                        or objects.get(store.location.key(model.name, f.relative)) != f.size)
        plans.append(ModelPlan(model, tuple(numbers), changed, copy.deepcopy(recorded)))
    return PublishPlan(store, index, etag, tuple(plans))


def carry_out(plan: PublishPlan, progress: UploadProgress | None = None) -> PublishResult:
    """Claim, upload, then write the index (see the module's docstring for the order and why)."""
    store, location = plan.store, plan.store.location
    _claim_all(plan)
    rows, uploaded, written = [], 0, {}
    for mp in plan.models:
        model, versions = mp.model, {}
        for local, (number, unchanged) in zip(model.versions, mp.numbers):
            if not unchanged:
                for f in local.files or (None,):
                    store.upload(f, location.key(model.name, str(number), f.relative if f else ""), progress)
                versions[str(number)] = {
                    "sha256": local.digest, "files": {f.relative: f.record() for f in local.files},
                    "local_version": local.number, "published": now_iso(), "source": model.source}
                uploaded += local.size
            rows.append(VersionResult(model.name, str(number), str(local.number),
                                      "unchanged" if unchanged else "uploaded", local.size))
        for f in mp.changed:  # config.pbtxt is last in model.files, so it goes up last
            store.upload(f, location.key(model.name, f.relative), progress)
        uploaded += sum(f.size for f in mp.changed)
        written[model.name] = _Written(versions, {f.relative: f.record() for f in model.files} if mp.changed else None,
                                       model.config.sha256)
        rows.append(VersionResult(model.name, "config", "config", "uploaded" if mp.changed else "unchanged",
                                  sum(f.size for f in model.files)))
    index_written = any(r.status == "uploaded" for r in rows)
    if index_written:
        clashes = _write_index(plan, written)
        if clashes:
            raise StoreError(f"model{'s' if len(clashes) > 1 else ''} {', '.join(map(repr, clashes))}: expected "
                             f"config.pbtxt changed by this publish alone, got it changed by another publish at the "
                             f"same time; this publish's versions are in the store and its index, and the index "
                             f"records the other config: publish again to put this one's up")
    return PublishResult(location, store.endpoint.url if store.endpoint else None,
                         triton_url(location, store.endpoint), tuple(rows), uploaded,
                         store.url_of(location.key(INDEX_FILE)), index_written)


def publish(repository: Path, s3_url: str, endpoint_url: str | None = None, progress: UploadProgress | None = None,
            connect_timeout_s: float = 5.0, client=None) -> PublishResult:
    """Upload a local model repository to s3://BUCKET/PREFIX (see the module's docstring for the rules)."""
    return carry_out(plan_publish(Path(repository), s3_url, endpoint_url, connect_timeout_s, client), progress)


def _claim_all(plan: PublishPlan) -> None:
    """Claim every number this publish will write, before it writes any; on a refusal, give back the
    claims already made (nothing went up under them) and stop."""
    claims = []
    try:
        for mp in plan.models:
            for local, (number, unchanged) in zip(mp.model.versions, mp.numbers):
                if not unchanged:
                    claims.append(plan.store.claim(mp.model.name, number, local.digest))
    except StoreError:
        for key in claims:
            plan.store.release(key)
        raise


def _write_index(plan: PublishPlan, written: Mapping[str, _Written]) -> list[str]:
    """Write the index with this publish's additions, over the one read; when another publish wrote it since,
    read it again and add them to that. Returns the models whose model-level files both changed."""
    index, etag = plan.index, plan.etag
    for attempt in range(INDEX_ATTEMPTS):
        clashes = _add(index, plan, written)
        try:
            plan.store.write_index(index, etag)
            return clashes
        except StoreConflict:
            if attempt == INDEX_ATTEMPTS - 1:
                raise
            index, etag = plan.store.read_index(plan.store.listing())
    raise AssertionError("unreachable")


def _add(index: dict, plan: PublishPlan, written: Mapping[str, _Written]) -> list[str]:
    """Add this publish's records to `index` (the one read, or a newer one). Its versions go in as they are
    (claimed: no other publish has their numbers); its model-level records replace the index's only where
    nobody else changed them since this publish read them, else the model is a clash."""
    clashes = []
    for mp in plan.models:
        ours = written[mp.model.name]
        entry = index["models"].setdefault(mp.model.name, {})
        entry.setdefault("versions", {}).update(ours.versions)
        if ours.files is not None:
            if entry.get("files", {}) in (mp.read_files, ours.files):
                entry.update(files=ours.files, config_sha256=ours.config_sha256)
            else:
                clashes.append(mp.model.name)
        entry["latest"] = max(int(n) for n in entry["versions"])
    index["format"], index["updated"] = STORE_FORMAT, now_iso()
    return clashes
