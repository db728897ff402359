"""Discovery (#25): endpoints files and DNS names, followed as they change, against real servers.

`affine_trio` is three servers of a tiny Python-backend model (y = 2x + 1, checked exactly). DNS
answers beyond what this machine's resolver knows (several addresses, a changing set, a failure) come
from a stand-in for `getaddrinfo` in tritonize.client.discovery; the connections are real.
"""
import asyncio
import json
import logging
import os
import socket
import threading
import time

import numpy as np
import pytest

from tritonize.client import AsyncTritonClient, DiscoveryError, TritonClient
from tritonize.client.discovery import FORMS

pytestmark = pytest.mark.server


def affine(x: np.ndarray) -> np.ndarray:
    """The served model in-process: every answer must equal it exactly."""
    return x * np.float32(2) + np.float32(1)


def write_endpoints(path, servers) -> None:
    """As `serve --endpoints-file` does it: a new file renamed over the old one (readers never see half)."""
    entries = [{"grpc": s.grpc_url, "http": s.http_url, "metrics": s.metrics_url, "pid": 0} for s in servers]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries))
    os.replace(tmp, path)


def by_url(client) -> dict:
    return {s.url: s for s in client.endpoint_stats()}


@pytest.mark.parametrize("target, error, message", [
    ("https://127.0.0.1:8001", ValueError, f"{FORMS}, got 'https://127.0.0.1:8001': not a host:port"),
    ("127.0.0.1:http", ValueError, "the port must be a number from 1 to 65535"),
    ("::1", ValueError, "an IPv6 address goes in brackets"),
    ("dns://8.8.8.8/triton:8001", ValueError, "a DNS server authority (dns://SERVER/NAME) is not supported"),
    ("dns:///:8001", ValueError, "no host before the port"),
    ("dns:///nowhere.test:8001", DiscoveryError,
     "dns:///nowhere.test:8001: the name 'nowhere.test' does not resolve ([Errno -2] Name or service not known); "
     "expected a name with A or AAAA records"),
    ("file://otherhost/endpoints.json", ValueError, "a file URL names a local file as file:///PATH"),
    ("file:", ValueError, "no PATH after file:"),
    ([], ValueError, f"a client needs at least one server: {FORMS}, got an empty list"),
    (8001, TypeError, f"{FORMS}, got int 8001"),
])
def test_bad_forms_fail_at_construction_saying_what_was_expected(target, error, message, fake_dns):
    for client_class in (TritonClient, AsyncTritonClient):
        with pytest.raises(error) as raised:
            client_class(target)
        assert message in str(raised.value)


def test_a_name_this_machine_cannot_resolve_fails_at_construction():
    # The real resolver, once: .invalid never resolves (RFC 6761).
    with pytest.raises(DiscoveryError, match=r"^dns:///no-such-host\.invalid:8001: the name 'no-such-host\.invalid' "
                                             r"does not resolve \(.+\); expected a name with A or AAAA records$"):
        TritonClient("dns:///no-such-host.invalid:8001")


def test_bad_endpoints_files_fail_at_construction(tmp_path):
    cases = {"missing.json": None, "object.json": '{"grpc": "127.0.0.1:1"}', "empty.json": "[]",
             "half.json": '[{"grpc": "127.0.0.1:1"', "entry.json": '[{"http": "127.0.0.1:1"}]',
             "port.json": '[{"grpc": "127.0.0.1:0"}]'}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
    expected = 'expected a JSON list of {"grpc": "host:port", ...} objects'
    for name, why in [("missing.json", "no such file; expected the JSON list that `tritonize serve --endpoints-file` "
                                       "writes"),
                      ("object.json", f"{expected}, got a JSON dict"),
                      ("empty.json", f"{expected}, got an empty list (no server)"),
                      ("half.json", f"{expected}, got invalid JSON"),
                      ("entry.json", f'{expected}, got entry 0 = {{"http": "127.0.0.1:1"}}'),
                      ("port.json", 'entry 0: expected "grpc": "host:port", got \'127.0.0.1:0\': the port must be')]:
        with pytest.raises(DiscoveryError) as raised:
            TritonClient(str(tmp_path / name))
        assert str(raised.value).startswith(f"endpoints file {tmp_path / name}: {why}"), str(raised.value)


def test_an_endpoints_file_spreads_calls_and_is_followed_as_it_changes(affine_trio, served_requests, tmp_path,
                                                                       caplog):
    a, b, c = affine_trio
    path = tmp_path / "endpoints.json"
    write_endpoints(path, [a, b])
    refresh_s = 0.3
    errors, wrong, stop = [], [], threading.Event()
    with TritonClient(f"file:{path}", refresh_s=refresh_s, timeout_s=20) as client:
        assert client.urls == [a.grpc_url, b.grpc_url] and client.targets == [f"file:{path}"]
        for i in range(10):
            x = np.full((1, 4), i, np.float32)
            np.testing.assert_array_equal(client.infer("affine", x)["y"], affine(x))
        stats = by_url(client)
        assert [stats[a.grpc_url].requests, stats[b.grpc_url].requests] == [5, 5]  # round-robin
        assert stats[a.grpc_url].successes == 5 and stats[a.grpc_url].source == f"file:{path}"
        before_c = served_requests(c, "affine")

        def send(seed: int) -> None:
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                x = rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32)
                try:
                    if not np.array_equal(client.infer("affine", x)["y"], affine(x)):
                        wrong.append(x)
                except Exception as e:  # every failure that reaches a caller is reported
                    errors.append(repr(e))

        threads = [threading.Thread(target=send, args=(seed,)) for seed in (1, 2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            write_endpoints(path, [b, c])  # a scaled out, c scaled in, while calls run
            changed = time.monotonic()
            while client.urls != [b.grpc_url, c.grpc_url] and time.monotonic() - changed < 10:
                time.sleep(0.01)
            followed_s = time.monotonic() - changed
            while by_url(client)[c.grpc_url].successes < 20 and time.monotonic() - changed < 10:
                time.sleep(0.01)
            on_a = by_url(client)[a.grpc_url].requests
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert errors == [] and wrong == []
        assert followed_s < refresh_s + 1.0, f"the client took {followed_s:.2f} s to follow the file"
        print(f"followed the file in {followed_s:.3f} s")
        stats = by_url(client)
        assert [s.url for s in client.endpoint_stats()] == [b.grpc_url, c.grpc_url, a.grpc_url]
        # a is out: no new call, its channel closed once its last call ended; its record stays readable.
        gone = stats[a.grpc_url]
        assert gone.removed and gone.in_flight == 0 and gone.requests == on_a
        with pytest.raises(ValueError, match="closed channel"):
            client._ring.removed[0].client.is_server_live()
        assert gone.failures.total == 0 and stats[b.grpc_url].failures.total == stats[c.grpc_url].failures.total == 0
        # What the client booked for c is what c's server answered.
        assert served_requests(c, "affine", at_least=before_c + stats[c.grpc_url].requests) - before_c == \
            stats[c.grpc_url].requests >= 20

        # A file caught half-written (or otherwise broken) keeps the last good set, and says so.
        path.write_text('[{"grpc": ')
        with caplog.at_level(logging.WARNING, logger="tritonize.client.discovery"):
            assert client.refresh() == [b.grpc_url, c.grpc_url]
        assert f"endpoints file {path}: expected a JSON list" in caplog.text
        assert "keeping its last endpoints" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tritonize.client.discovery"):
            client.refresh()
        assert caplog.text == ""  # the same failure again: said once, not every refresh_s
        x = np.ones((2, 4), np.float32)
        np.testing.assert_array_equal(client.infer("affine", x)["y"], affine(x))


def test_a_dns_name_gives_every_address_and_one_that_refuses_is_ejected(affine_trio, fake_dns, caplog):
    a, b, c = affine_trio
    # The real resolver: localhost is 127.0.0.1 here (and ::1 where the hosts file says so).
    with TritonClient(f"dns:///localhost:{a.grpc_port}", cooldown_s=30) as client:
        assert f"127.0.0.1:{a.grpc_port}" in client.urls and client.targets == [f"dns:///localhost:{a.grpc_port}"]
        for i in range(4):
            x = np.full((1, 4), i, np.float32)
            np.testing.assert_array_equal(client.infer("affine", x)["y"], affine(x))
        assert by_url(client)[f"127.0.0.1:{a.grpc_port}"].successes == 4

    # Three A/AAAA records: the servers listen on 127.0.0.1 only, so [::1] refuses.
    fake_dns["replicas.test"] = [("127.0.0.1", a.grpc_port), ("::1", a.grpc_port), ("127.0.0.1", b.grpc_port)]
    v6 = f"[::1]:{a.grpc_port}"
    with TritonClient(f"dns:///replicas.test:{a.grpc_port}", cooldown_s=30, refresh_s=0.2) as client:
        assert client.urls == [a.grpc_url, v6, b.grpc_url]
        client.model_info("affine")  # the first pick: a
        for i in range(10):
            x = np.full((1, 4), i, np.float32)
            np.testing.assert_array_equal(client.infer("affine", x)["y"], affine(x))  # never fails
        refused = by_url(client)[v6]
        assert refused.ejected and refused.down_for_s > 20 and refused.requests == 1
        assert refused.failures.unavailable == 1 and refused.retried_elsewhere == 1 and refused.successes == 0
        assert by_url(client)[a.grpc_url].successes + by_url(client)[b.grpc_url].successes == 10

        # The answer changes (a pod gone, another one ready): followed within refresh_s, on calls.
        fake_dns["replicas.test"] = [("127.0.0.1", b.grpc_port), ("127.0.0.1", c.grpc_port)]
        changed = time.monotonic()
        while client.urls != [b.grpc_url, c.grpc_url] and time.monotonic() - changed < 5:
            client.infer("affine", np.zeros((1, 4), np.float32))
            time.sleep(0.02)
        assert time.monotonic() - changed < 0.2 + 1.0
        for i in range(6):
            client.infer("affine", np.zeros((1, 4), np.float32))
        assert by_url(client)[c.grpc_url].successes >= 3 and by_url(client)[v6].removed

        # A lookup that fails keeps the last good set and is logged; calls go on.
        fake_dns["replicas.test"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        with caplog.at_level(logging.WARNING, logger="tritonize.client.discovery"):
            assert client.refresh() == [b.grpc_url, c.grpc_url]
        assert "dns:///replicas.test:" in caplog.text and "Temporary failure in name resolution" in caplog.text
        np.testing.assert_array_equal(client.infer("affine", np.ones((1, 4), np.float32))["y"],
                                      affine(np.ones((1, 4), np.float32)))
    with pytest.raises(DiscoveryError, match=r"dns:///gone.test:8001: the name 'gone.test' does not resolve"):
        TritonClient("dns:///gone.test")  # the first lookup failing is the constructor's error; port 8001


def test_the_async_client_follows_a_file_too(affine_trio, tmp_path):
    a, b, c = affine_trio
    path = tmp_path / "endpoints.json"
    write_endpoints(path, [a])

    async def run():
        async with AsyncTritonClient(path, refresh_s=0.1) as client:  # a pathlib.Path is a file too
            x = np.ones((3, 4), np.float32)
            for _ in range(2):
                np.testing.assert_array_equal((await client.infer("affine", x))["y"], affine(x))
            write_endpoints(path, [b, c])
            deadline = time.monotonic() + 5
            while client.urls != [b.grpc_url, c.grpc_url] and time.monotonic() < deadline:
                await asyncio.gather(*(client.infer("affine", x) for _ in range(2)))
                await asyncio.sleep(0.05)
            results = await asyncio.gather(*(client.infer("affine", x) for _ in range(6)))
            assert all(np.array_equal(r["y"], affine(x)) for r in results)
            await asyncio.sleep(0.05)  # the task that closes a's channel runs
            with pytest.raises(Exception, match="Channel is closed"):
                await client._ring.removed[0].client.is_server_live()
            return {s.url: s for s in client.endpoint_stats()}

    stats = asyncio.run(run())
    assert list(stats) == [b.grpc_url, c.grpc_url, a.grpc_url] and stats[a.grpc_url].removed
    assert stats[b.grpc_url].successes >= 3 and stats[c.grpc_url].successes >= 3
    assert sum(s.failures.total for s in stats.values()) == 0
