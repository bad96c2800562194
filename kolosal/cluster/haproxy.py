"""The HAProxy configuration of a cluster: requests routed by the ``model`` of
their JSON body to the instances serving that model.

* ``option http-buffer-request`` makes HAProxy wait for the body, and
  ``req.body,json_query('$.model')`` reads the model of a POST from the part
  of the body that fits in its buffer (``tune.bufsize``); a client can name
  the model in the ``X-Kolosal-Model`` header instead, which routes a body
  of any size (400 ``model_mismatch`` when the body's model, if read,
  differs); a body whose model is beyond the buffer and with no header gets
  413 ``request_too_large``, never a guessed instance;
* each model has a backend of the instances that serve it (``balance
  roundrobin`` or ``leastconn`` per ``routing_strategy``), whose servers
  ``track`` the health of the same server in ``kolosal_all``, so each
  instance is checked once (``GET /v1/health``, 200 or it is out);
* requests without a model (``GET /v1/models``, ``/v1/health``, admin
  calls) go to ``kolosal_all``, every instance;
* a model no instance serves gets 404 ``model_not_found``, a model whose
  instances are all down 503 ``model_unavailable``, and HAProxy's own errors
  (400, 408, 502, 503, 504) come in the OpenAI error envelope too.

Retries and timeouts are those of ``deploy/haproxy/haproxy.cfg``, which
explains them."""
from __future__ import annotations

import json
from typing import Optional

import jinja2

from ..server.openapi import MODEL_HEADER
from .spec import ClusterSpec, cluster_models

BALANCE = {"round_robin": "roundrobin", "least_conn": "leastconn"}
# HAProxy's own refusals in the OpenAI envelope (``http-error``); the message says what happened
OWN_ERRORS = {
    400: ("invalid_request_error", "bad_request", "The load balancer could not parse the request."),
    408: ("invalid_request_error", "request_timeout", "The request was not received in time."),
    500: ("server_error", "internal_error", "The load balancer failed to handle the request."),
    502: ("server_error", "bad_gateway", "The instance closed the connection or sent an invalid answer."),
    503: ("server_error", "no_instance_available", "No instance is available to serve the request; retry later."),
    504: ("server_error", "gateway_timeout", "The instance did not answer in time."),
}

TEMPLATE = """\
# HAProxy configuration of a kolosal cluster: written by
#   python -m kolosal.cluster haproxy {{ source }}
# Change the cluster file and write this again rather than editing it.
# Checked with `haproxy -c -f FILE`; deploy/haproxy/haproxy.cfg explains each setting.

global
    # the whole JSON body must fit in one buffer to be routed by its model
    tune.bufsize {{ bufsize }}
{%- if stats_socket %}
    stats socket {{ stats_socket }} mode 600 level admin
{%- endif %}

defaults
    mode http
    option http-buffer-request
    option forwardfor
    timeout connect 2s
    timeout client {{ timeout }}s
    timeout server {{ timeout }}s
    timeout tunnel 1h
    timeout http-request 30s
    timeout http-keep-alive 10s
    timeout queue 30s
    timeout check 2s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    default-server inter {{ inter }} fastinter 500ms downinter 1s fall {{ fall }} rise {{ rise }}
{%- for status, body in own_errors %}
    http-error status {{ status }} content-type application/json string '{{ body }}'
{%- endfor %}

frontend kolosal
    bind {{ bind }}
    # the model: the {{ header }} header when the client sends it (read before the body,
    # so a body of any size routes), else the "model" of the JSON body within the buffer
    acl has_model var(txn.model) -m found
    acl body_has_model var(txn.body_model) -m found
    acl same_model var(txn.model),strcmp(txn.body_model) eq 0
    http-request set-var(txn.body_model) req.body,json_query('$.model') if METH_POST
    http-request set-var(txn.body_len) req.body_len if METH_POST
    http-request set-var(txn.model) req.fhdr({{ header }}) if { req.fhdr({{ header }}) -m found }
    http-request set-var(txn.model) var(txn.body_model) if !has_model body_has_model
{%- for chunk in known_chunks %}
    acl model_known var(txn.model) -m str {{ chunk | join(" ") }}
{%- endfor %}
    http-request return status 400 content-type application/json string '{{ mismatch }}' if body_has_model !same_model
    http-request return status 413 content-type application/json string '{{ too_large }}' if METH_POST !has_model { req.body_size,sub(txn.body_len) gt 0 }
    http-request return status 404 content-type application/json lf-string '{{ unknown }}' if has_model !model_known
{%- for b in backends %}
    use_backend {{ b.name }} if { var(txn.model) -m str {{ b.model }} }
{%- endfor %}
    default_backend kolosal_all

# every instance: health checks, and requests that name no model
backend kolosal_all
    balance {{ balance }}
    option httpchk GET /v1/health
    http-check expect status 200
    http-request return status 503 content-type application/json hdr Retry-After 5 string '{{ none_up }}' if { nbsrv eq 0 }
{%- for name, addr in instances %}
    server {{ name }} {{ addr }} check
{%- endfor %}
{% for b in backends %}
# model {{ b.model }}: {{ b.servers | join(", ") }}
backend {{ b.name }}
    balance {{ balance }}
    http-request return status 503 content-type application/json hdr Retry-After 5 lf-string '{{ unavailable }}' if { nbsrv eq 0 }
{%- for name in b.servers %}
    server {{ name }} {{ addresses[name] }} track kolosal_all/{{ name }}
{%- endfor %}
{% endfor -%}
"""


def _envelope(message: str, kind: str, code: str, param: Optional[str] = None) -> str:
    body = json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}},
                      separators=(",", ":"))
    assert "'" not in body, body  # the body goes between single quotes, where HAProxy knows no escapes
    return body


def render_haproxy(spec: ClusterSpec, bind: str = "127.0.0.1:8000", stats_socket: Optional[str] = None,
                   source: str = "cluster.json", timeout_seconds: int = 660, bufsize: int = 262144,
                   inter: str = "1s", fall: int = 2, rise: int = 2) -> str:
    """The HAProxy configuration text of ``spec``. ``timeout_seconds`` should
    be above the instances' ``inference.job_timeout_seconds`` (600 by default)."""
    missing = [n for n in spec.model_distribution if n not in spec.instances]
    if missing or not spec.instances:
        raise ValueError(f"instances: no address for {', '.join(missing) or 'any instance'} "
                         f"(instances: {{name: 'host:port'}})")
    by_model = cluster_models(spec)
    backends = [{"name": f"model_{i}", "model": m, "servers": names}
                for i, (m, names) in enumerate(by_model.items(), 1)]
    # the model's name goes into the message through HAProxy's json converter (escaped for JSON)
    unknown = _envelope("The model \u0000 does not exist in this cluster.", "invalid_request_error",
                        "model_not_found", "model").replace("\\u0000", '\\"%[var(txn.model),json(utf8s)]\\"')
    unavailable = _envelope("No instance serving the model \u0000 is up; retry later.", "server_error",
                            "model_unavailable", "model").replace("\\u0000",
                                                                  '\\"%[var(txn.model),json(utf8s)]\\"')
    models = list(by_model)
    text = jinja2.Environment(autoescape=False, keep_trailing_newline=True).from_string(TEMPLATE).render(
        source=source, bufsize=bufsize, stats_socket=stats_socket, timeout=timeout_seconds, bind=bind,
        inter=inter, fall=fall, rise=rise, balance=BALANCE[spec.routing_strategy],
        own_errors=[(s, _envelope(msg, kind, code)) for s, (kind, code, msg) in OWN_ERRORS.items()],
        known_chunks=[models[i:i + 20] for i in range(0, len(models), 20)] or [["-"]],
        header=MODEL_HEADER,
        mismatch=_envelope(f"The {MODEL_HEADER} header names another model than the request body.",
                           "invalid_request_error", "model_mismatch", "model"),
        too_large=_envelope(f"The request body is larger than the {bufsize // 1024} KiB the load balancer reads "
                            f"to find its model, and its model is not within them: name the model in the "
                            f"{MODEL_HEADER} header, or send model first in the JSON body.",
                            "invalid_request_error", "request_too_large"),
        unknown=unknown, unavailable=unavailable,
        none_up=_envelope("No instance of the cluster is up; retry later.", "server_error", "no_instance_available"),
        instances=list(spec.instances.items()), addresses=dict(spec.instances), backends=backends)
    return text

