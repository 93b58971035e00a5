"""/metrics through the real server: what the proxy counts, by what labels, and who may read it."""

import json

import pytest
import urllib3
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from keys.job_runs import job_succeeded
from keys.jobs import run_due_jobs
from proxy import hosts
from proxy.metrics import UNKNOWN_UPSTREAM
from proxy.tests.relay_helpers import error_code


def _get(site, headers=None):
    # A fresh connection each time, closed after: no keep-alive outlives the test's server.
    return urllib3.request(
        "GET",
        f"{site.url}/metrics",
        headers={"Connection": "close", **(headers or {})},
        retries=False,
        timeout=10,
        redirect=False,
    )


def _scrape(site, headers=None) -> str:
    answer = _get(site, headers)
    assert answer.status == 200, answer.data
    assert answer.headers["Content-Type"].startswith("text/plain")
    return answer.data.decode()


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_counters_move_by_exactly_the_calls_sent_by_upstream_outcome_and_code(site, proxy, make_key, pool):
    key, _ = make_key()
    before = _samples(_scrape(site))
    for _ in range(3):
        assert proxy(key, "x").status == 200
    for _ in range(2):
        assert pool.request("GET", f"{site.url}/proxy/echo/kp_not_a_key/x").status == 401
    after = _samples(_scrape(site))

    def moved(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("proxy_requests_total", upstream="echo", outcome="allowed", code="200") == 3
    assert moved("proxy_requests_total", upstream="echo", outcome="rejected", code="401") == 2
    assert moved("proxy_request_duration_seconds_count", upstream="echo") == 5
    assert moved("proxy_upstream_duration_seconds_count", upstream="echo") == 3
    assert moved("proxy_policy_cache_total", kind="upstream", result="hit") >= 4
    assert _value(after, "proxy_requests_in_flight") == 0


def test_no_key_id_appears_in_the_exposition(site, proxy, make_key):
    key, _ = make_key()
    assert proxy(key, "x").status == 200
    text = _scrape(site)
    assert key.key_id not in text
    assert "kp_" not in text


def test_made_up_upstream_slugs_add_no_label_values(site, proxy, make_key):
    key, _ = make_key()
    before = _samples(_scrape(site))
    for n in range(5):
        answer = proxy(key, "x", upstream=f"made-up-{n}")
        assert (answer.status, error_code(answer)) == (404, "unknown_upstream")
    text = _scrape(site)
    assert "made-up" not in text
    after = _samples(text)
    labels = {"upstream": UNKNOWN_UPSTREAM, "outcome": "rejected", "code": "404"}
    assert (
        _value(after, "proxy_requests_total", **labels) - _value(before, "proxy_requests_total", **labels)
        == 5
    )


def test_a_reader_outside_the_allowlist_is_403_permission_denied(site):
    with override_settings(METRICS_ALLOWED_IPS=["10.0.0.0/8"]):
        answer = _get(site)
    assert (answer.status, error_code(answer)) == (403, "permission_denied")
    assert b"proxy_requests" not in answer.data


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic bWV0cmljcw==", "Bearer s3cret-tokenX"]
)
def test_a_reader_without_the_token_is_401_not_authenticated(site, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    with override_settings(METRICS_TOKEN="s3cret-token"):
        answer = _get(site, headers)
    assert (answer.status, error_code(answer)) == (401, "not_authenticated")
    assert json.loads(answer.data)["error"]["message"]


def test_a_reader_with_the_token_gets_the_metrics(site):
    with override_settings(METRICS_TOKEN="s3cret-token"):
        assert "proxy_requests_in_flight" in _scrape(site, {"Authorization": "Bearer s3cret-token"})


def test_metrics_never_redirect_to_https(site):
    with override_settings(SECURE_SSL_REDIRECT=True):
        assert _get(site).status == 200


@override_settings(PROXY_HOSTS=["proxy.example"])
def test_metrics_answer_on_a_proxy_host_too():
    assert hosts.route_for("proxy.example", "/metrics") == "site"
    assert hosts.route_for("proxy.example", "/portal/") == "wrong_host"


def test_jobs_last_success_is_exposed_as_a_gauge(site):
    job_succeeded("usage_trim", now=1_700_000_000.0)
    run_due_jobs(last_runs={}, now=0.0, schedule=(("usage_roll_up", lambda: None, 60),))
    samples = _samples(_scrape(site))
    assert _value(samples, "keys_job_last_success_timestamp_seconds", job="usage_trim") == 1_700_000_000.0
    assert _value(samples, "keys_job_last_success_timestamp_seconds", job="usage_roll_up") > 1_700_000_000.0


# --- The batch of multiprocess mode (bin/serve) --------------------------------------------------


def test_a_batched_histogram_reads_as_the_same_observations_made_one_by_one(monkeypatch):
    """proxy.metrics._observe_all writes prometheus-client's own Histogram series (private parts): this
    pins that the sums it writes are what observe() would have written, bucket by bucket."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from proxy import metrics

    registry = CollectorRegistry()
    one_by_one = Histogram("one_by_one", "", ["upstream"], buckets=metrics.BUCKETS, registry=registry)
    batched = Histogram("batched", "", ["upstream"], buckets=metrics.BUCKETS, registry=registry)
    calls = Counter("calls", "", registry=registry)
    values = [0.0001, 0.005, 0.0051, 0.3, 0.3, 7.0, 61.0, 1e9]
    for value in values:
        one_by_one.labels("a").observe(value)
    monkeypatch.setattr(metrics, "BATCHED", True)
    monkeypatch.setattr(metrics, "_flusher_started", True)  # no thread: this test flushes itself
    for value in values:
        metrics.observe(batched.labels("a"), value)
        metrics.move(calls)
    assert registry.get_sample_value("batched_count", {"upstream": "a"}) == 0  # nothing written yet
    metrics.flush_batch()

    def samples(name: str) -> list[tuple[str, str | None, float]]:
        family = next(family for family in registry.collect() if family.name == name)
        return [
            (sample.name.removeprefix(name), sample.labels.get("le"), sample.value)
            for sample in family.samples
            if not sample.name.endswith("_created")  # when each was made, not what it holds
        ]

    assert samples("batched") == samples("one_by_one")
    assert registry.get_sample_value("calls_total") == len(values)
