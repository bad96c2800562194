"""Running several kolosal instances as one service behind HAProxy.

One cluster file (JSON or YAML) names the instances and where the load
balancer reaches them (``instances``), which models each one serves
(``model_distribution``) and how a model's requests are spread over its
instances (``routing_strategy``: ``round_robin`` or ``least_conn``); it may
also hold the model entries (``models``) the instances load.

* ``python -m kolosal.cluster haproxy cluster.json -o haproxy.cfg`` writes the
  HAProxy configuration that routes each request by its JSON body's
  ``model`` (``haproxy.py``);
* ``kolosal-server --cluster cluster.json --instance NAME`` starts one
  instance: it loads its share of the models and lists the whole cluster's
  models on ``/v1/models`` (``spec.py``).

docs/scaling.md describes the topologies and what the tests showed."""
from __future__ import annotations

from .haproxy import render_haproxy
from .spec import ClusterSpec, apply_cluster, cluster_models, load_cluster

__all__ = ["ClusterSpec", "apply_cluster", "cluster_models", "load_cluster", "render_haproxy"]
