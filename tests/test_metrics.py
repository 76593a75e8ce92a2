"""The Prometheus exposition: cumulative buckets, escaped labels, only known series."""

from __future__ import annotations

from smallfleet.metrics import BUCKETS, Metrics


def test_render_is_prometheus_text() -> None:
    m = Metrics()
    m.request("/v1/chat/completions", 200, 0.003)
    m.request("/v1/chat/completions", 200, 0.2)
    m.request("/v1/chat/completions", 200, 999.0)
    m.inc("smallfleet_check_failures_total", (("check", 'we"ird\\name\n'),))
    text = m.render()
    assert "# TYPE smallfleet_requests_total counter" in text and "# TYPE smallfleet_request_duration_seconds histogram" in text
    assert 'smallfleet_requests_total{endpoint="/v1/chat/completions",status="200"} 3' in text
    lab = 'endpoint="/v1/chat/completions"'
    assert f'smallfleet_request_duration_seconds_bucket{{{lab},le="0.005"}} 1' in text
    assert f'smallfleet_request_duration_seconds_bucket{{{lab},le="0.25"}} 2' in text
    assert f'smallfleet_request_duration_seconds_bucket{{{lab},le="{BUCKETS[-1]:g}"}} 2' in text  # 999 s is past the last
    assert f'smallfleet_request_duration_seconds_bucket{{{lab},le="+Inf"}} 3' in text
    assert f"smallfleet_request_duration_seconds_count{{{lab}}} 3" in text
    assert f"smallfleet_request_duration_seconds_sum{{{lab}}} 999.203" in text
    assert 'smallfleet_check_failures_total{check="we\\"ird\\\\name\\n"} 1' in text
    assert text.endswith("\n") and all(line.startswith(("#", "smallfleet_")) for line in text.splitlines())
