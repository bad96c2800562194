"""Monitoring endpoints: host metrics (JSON or Prometheus by ``Accept``),
the Prometheus exposition, completion metrics and profiler timings."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from ..monitoring import get_monitoring
from ..openapi import api_route

bp = Blueprint("metrics", __name__)

_JSON, _OPENMETRICS, _TEXT = "application/json", "application/openmetrics-text", "text/plain"


def _negotiate(header: str) -> str:
    """JSON, OpenMetrics or text by the ``Accept`` qualities (parameters other
    than q, such as Prometheus' ``version=``, are ignored); ties go to JSON."""
    quality = {"json": -1.0, "om": -1.0, "text": -1.0, "any": -1.0}
    for part in header.split(","):
        mtype, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for p in params:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        key = {_JSON: "json", "application/*": "json", _OPENMETRICS: "om", _TEXT: "text", "text/*": "text",
               "*/*": "any"}.get(mtype.lower())
        if key:
            quality[key] = max(quality[key], q)
    json_q = quality["json"] if quality["json"] >= 0 else quality["any"]
    prom_q = max(quality["om"], quality["text"])
    if not header.strip() or prom_q <= 0 or prom_q <= json_q:
        return _JSON
    return _OPENMETRICS if quality["om"] >= quality["text"] else _TEXT


def _prometheus(accept: str) -> Response:
    body, content_type = get_monitoring(current_app).prometheus.expose(accept)
    return Response(body, status=200, content_type=content_type)


@api_route(bp, "/metrics", ["GET"], summary="Host metrics: JSON, or the Prometheus exposition when Accept asks "
                                            "for text/plain or OpenMetrics",
           auth="metrics", limit=None)
def metrics():  # type: ignore[no-untyped-def]
    best = _negotiate(request.headers.get("Accept", ""))
    if best in (_OPENMETRICS, _TEXT):
        resp = _prometheus(request.headers.get("Accept", "") if best == _OPENMETRICS else "")
    else:
        resp = jsonify(get_monitoring(current_app).system.snapshot())
    resp.vary.add("Accept")
    return resp


@api_route(bp, "/metrics/prometheus", ["GET"], summary="The Prometheus exposition (text, or OpenMetrics on request)",
           auth="metrics", limit=None)
def metrics_prometheus():  # type: ignore[no-untyped-def]
    accept = request.headers.get("Accept", "")
    return _prometheus(accept if _OPENMETRICS in accept else "")


@api_route(bp, "/completion-metrics", ["GET"], summary="Completion metrics, overall and per engine",
           auth="metrics", limit=None)
def completion_metrics():  # type: ignore[no-untyped-def]
    return jsonify(get_monitoring(current_app).completion_report())


@api_route(bp, "/metrics/completion", ["GET"], summary="Completion metrics, overall and per engine",
           auth="metrics", limit=None)
def metrics_completion():  # type: ignore[no-untyped-def]
    return completion_metrics()


@api_route(bp, "/metrics/profile", ["GET"], summary="Profiler timings per engine (tokenize, template, prefill, "
                                                    "decode, sample) and of the server (http_serialize)",
           auth="metrics", limit=None)
def metrics_profile():  # type: ignore[no-untyped-def]
    return jsonify(get_monitoring(current_app).profile())
