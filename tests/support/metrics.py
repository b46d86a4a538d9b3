"""This process's Prometheus exposition, parsed (what GET /metrics answers in an in-process server)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from leaderboard import observability as obs


def exposed() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse GET /metrics output the way Prometheus does: {(sample name, sorted labels): value}."""
    body, content_type = obs.metrics_response()
    assert content_type.startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
