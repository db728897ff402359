"""The endpoint ring's ejection and re-probe, on a clock the test moves (`clock`, conftest.py; no server)."""
from tritonize.client.endpoints import EndpointRing


def picks(ring: EndpointRing, n: int) -> list[str]:
    return [ring.pick().url for _ in range(n)]


def test_a_failed_endpoint_is_set_aside_then_probed_by_one_call(clock):
    ring = EndpointRing(["a:1", "b:1"], lambda url: None, cooldown_s=1.0)
    a, b = ring.endpoints
    assert sorted(picks(ring, 4)) == ["a:1", "a:1", "b:1", "b:1"]  # round-robin while both are well
    ring.failed(a, sent_at=clock.now)
    assert picks(ring, 4) == ["b:1"] * 4 and not ring.has_other_up(b) and ring.has_other_up(a)
    clock.now += 1.0  # the cool-down is over: one call probes a, the others keep away meanwhile
    assert sorted(picks(ring, 3)) == ["a:1", "b:1", "b:1"]
    assert picks(ring, 4) == ["b:1"] * 4
    ring.failed(a, sent_at=clock.now)  # the probe failed: set aside twice as long
    clock.now += 1.5
    assert picks(ring, 4) == ["b:1"] * 4
    clock.now += 0.5
    probe_sent = clock.now
    assert "a:1" in picks(ring, 2)
    ring.succeeded(a, sent_at=probe_sent)  # the probe succeeded: a is back, its next cool-down short again
    assert sorted(picks(ring, 4)) == ["a:1", "a:1", "b:1", "b:1"] and a.ejections == 0


def test_only_news_counts(clock):
    ring = EndpointRing(["a:1", "b:1"], lambda url: None, cooldown_s=1.0)
    a, _ = ring.endpoints
    before = clock.now
    clock.now += 0.1
    ring.failed(a, sent_at=clock.now)
    ring.failed(a, sent_at=before)  # a straggler of the same outage does not lengthen the cool-down
    ring.succeeded(a, sent_at=before)  # nor does a call answered from before the ejection bring a back
    assert a.ejections == 1 and a.down_until == clock.now + 1.0
    ring.mark_up(a)  # a fresh readiness check does
    assert a.ejections == 0 and a.is_up(clock.now)


def test_cool_downs_double_up_to_the_cap_and_a_lost_probe_expires(clock):
    ring = EndpointRing(["a:1", "b:1"], lambda url: None, cooldown_s=1.0, max_cooldown_s=4.0)
    a, b = ring.endpoints
    for expected in (1.0, 2.0, 4.0, 4.0):
        ring.failed(a, sent_at=clock.now)
        assert a.down_until - clock.now == expected
    clock.now = a.down_until
    assert "a:1" in picks(ring, 2)  # the probe goes out and never reports (a cancelled call)
    assert picks(ring, 2) == ["b:1"] * 2
    clock.now += ring.probe_s
    assert "a:1" in picks(ring, 2)  # another call probes
    ring.failed(b, sent_at=clock.now)
    ring.failed(a, sent_at=clock.now)
    assert ring.pick() is b  # every endpoint set aside: the one back soonest is used anyway
    assert ring.pick(avoid={"b:1"}) is a  # unless the call must not go there again
