"""GET /metrics: Prometheus text with request latency per route group, the array cache's
hit counts, the worker queue depth, training times and job states."""

from __future__ import annotations

import re

_SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+-]+$')


def _parse(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        assert _SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


async def test_metrics_count_requests_and_cache(client):
    for _ in range(3):
        assert (await client.get("/precomputed/raw/v0/s0/0-256_0-256_0-1")).status == 200
    assert (await client.get("/precomputed/raw/v0/s0/no-such-chunk")).status in (400, 404)
    assert (await client.get("/api/health")).status == 200
    response = await client.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    values = _parse(await response.text())
    ok = 'group="precomputed",method="GET",status="2xx"'
    assert values[f"ilastik_web_request_duration_seconds_count{{{ok}}}"] >= 3
    assert values[f'ilastik_web_request_duration_seconds_bucket{{{ok},le="+Inf"}}'] >= 3
    bad = [k for k in values if 'group="precomputed"' in k and 'status="4xx"' in k
           and k.endswith("_count" + k[k.index("{"):])]
    assert bad and values[bad[0]] >= 1
    assert values['ilastik_web_request_duration_seconds_count{group="api",method="GET",'
                  'status="2xx"}'] >= 1
    # The repeated chunk is answered from the cache of encoded chunk bodies.
    assert values['ilastik_web_cache_requests_total{cache="chunks",outcome="hit"}'] >= 1
    assert 0 < values['ilastik_web_cache_hit_ratio{cache="chunks"}'] <= 1
    assert values['ilastik_web_worker_queue_depth{lane="chunks"}'] >= 0


async def test_metrics_need_the_token(aiohttp_client, make_app, raw_layer):
    client = await aiohttp_client(make_app([raw_layer], token="secret-token"))
    assert (await client.get("/metrics")).status == 401
    response = await client.get("/metrics", headers={"Authorization": "Bearer secret-token"})
    assert response.status == 200


