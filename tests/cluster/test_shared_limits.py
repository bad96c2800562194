"""API-key rate limits and token quotas hold cluster-wide: three instances
share one redis-server (``storage_uri``), and requests through HAProxy
(round robin, so consecutive requests land on different instances) count
against one budget per key, whichever instance answers."""
from __future__ import annotations

import signal

import httpx
import pytest

from procs import free_port, start_redis

from .support import HOSTS, REPO, HAProxy, Instance, instance_config, model_entry

MODEL = "smollm2"
RATE = 10  # requests per minute per key
QUOTA = 200  # tokens per minute per key
BACKEND = "kolosal_servers"


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def limited(model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    redis = start_redis(tmp)
    uri = next(redis)
    security = {"api_keys": ["alice-key", "bob-key"],
                "rate_limiting": {"enabled": True, "requests_per_minute": RATE, "burst_size": RATE,
                                  "tokens_per_minute": QUOTA, "storage_uri": uri}}
    instances = []
    for i, host in enumerate(HOSTS, 1):
        port = free_port(host)
        cfg = instance_config(host, port, [model_entry(MODEL, model_path)], security=security)
        instances.append(Instance(f"kolosal{i}", host, port, cfg, tmp / f"kolosal{i}"))
    lb = None
    try:
        for inst in instances:
            inst.start(wait=False)
        for inst in instances:
            inst.wait_healthy()
        lb_port = free_port()
        env = {"KOLOSAL_LB_BIND": f"127.0.0.1:{lb_port}", "KOLOSAL_LB_SOCKET": str(tmp / "haproxy.sock"),
               "KOLOSAL_LB_STATS": f"127.0.0.1:{free_port()}",
               **{f"KOLOSAL_{i}": inst.address for i, inst in enumerate(instances, 1)}}
        lb = HAProxy(REPO / "deploy/haproxy/haproxy.cfg", tmp / "haproxy.sock", env)
        for inst in instances:
            assert lb.wait_status(BACKEND, inst.name, "UP") == "UP"
        yield instances, f"http://127.0.0.1:{lb_port}", redis
    finally:
        if lb is not None:
            lb.close()
        for inst in instances:
            inst.stop(signal.SIGKILL)
        redis.close()


def test_rate_limit_is_one_budget_across_instances(limited):
    instances, url, _ = limited
    remaining = []
    for _ in range(RATE):
        r = httpx.get(url + "/v1/models", headers=bearer("alice-key"), timeout=10)
        assert r.status_code == 200, r.text
        remaining.append(int(r.headers["RateLimit-Remaining"]))
    # three instances answered in turn, and each saw the requests the others had counted
    assert remaining == list(range(RATE - 1, -1, -1))
    r = httpx.get(url + "/v1/models", headers=bearer("alice-key"), timeout=10)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    for inst in instances:  # spent on every instance, also those that answered fewer of them
        r = httpx.get(inst.url + "/v1/models", headers=bearer("alice-key"), timeout=10)
        assert r.status_code == 429, (inst.name, r.text)
    # another key has its own budget
    assert httpx.get(url + "/v1/models", headers=bearer("bob-key"), timeout=10).status_code == 200


def test_token_quota_is_one_budget_across_instances(limited):
    instances, url, _ = limited
    before = [inst.requests_served().get(MODEL, 0) for inst in instances]
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 40, "ignore_eos": True}
    used = []
    with httpx.Client(base_url=url, timeout=60, headers=bearer("bob-key")) as client:
        while True:
            r = client.post("/v1/completions", json=body)
            if r.status_code != 200:
                break
            used.append(r.json()["usage"]["total_tokens"])
            assert len(used) <= QUOTA // 40, "more requests passed than one quota allows"
    assert r.status_code == 429 and r.json()["error"]["code"] == "token_quota_exceeded", r.text
    per_request = used[0]
    assert set(used) == {per_request}  # ignore_eos: each used exactly what it reserved
    # one budget: as many requests as fit in one quota, although they went to different instances
    assert len(used) == QUOTA // per_request and sum(used) <= QUOTA
    after = [inst.requests_served().get(MODEL, 0) for inst in instances]
    assert sum(1 for a, b in zip(after, before) if a > b) >= 2, (before, after)
    for inst in instances:
        r = httpx.post(inst.url + "/v1/completions", json=body, headers=bearer("bob-key"), timeout=60)
        assert r.status_code == 429 and r.json()["error"]["code"] == "token_quota_exceeded", (inst.name, r.text)


def test_while_redis_is_down_each_instance_keeps_its_own_limits(limited):
    """Runs last: Redis stops. Keys are then limited per instance, in memory, rather than refused or failed."""
    instances, url, redis = limited
    redis.close()  # stops redis-server
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4}
    with httpx.Client(base_url=url, timeout=60, headers=bearer("bob-key")) as client:
        for _ in range(3):  # bob's quota was spent in Redis; each instance now counts from zero
            r = client.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
    assert any("kept in memory" in inst.log() for inst in instances)
