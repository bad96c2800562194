"""The cluster file and what one instance takes from it.

The cluster keys (``instances``, ``model_distribution``, ``routing_strategy``,
``instance``) are ``ClusterKeys`` of the server configuration
(``config_schema.py``), so they may also sit in a server's own config file;
a cluster file adds the model entries its instances load (``models``)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

from pydantic import Field

from ..server.config import ConfigError, read_models_document
from ..server.config_schema import ClusterKeys, ConfigFile, ModelEntry


class ClusterSpec(ClusterKeys):
    models: List[ModelEntry] = Field(default_factory=list)  # entries the instances take their models from


def load_cluster(path: Union[str, Path], root: Optional[Union[str, Path]] = None) -> ClusterSpec:
    """The validated cluster file; ConfigError naming the file and the key otherwise. Model
    paths resolve against ``root`` (the instance's install root), else ``install_root(path)``
    (the file's folder, or the parent of a ``config`` folder), as for a models file."""
    spec = read_models_document(path, ClusterSpec, root)
    path = Path(path).resolve()
    errors = [f"{path}: models[{i}]: '{m.model_id}' is served by no instance (model_distribution)"
              for i, m in enumerate(spec.models) if not any(m.model_id in ms for ms in
                                                            spec.model_distribution.values())]
    if errors:
        raise ConfigError(errors)
    return spec


def apply_cluster(cfg: ConfigFile, spec: Optional[ClusterSpec], instance: Optional[str]) -> None:
    """Make ``cfg`` the configuration of ``instance`` of the cluster: the
    cluster keys from ``spec`` (when given), and the model entries of
    ``spec`` this instance serves, unless ``cfg`` configures them itself.
    Then every model of the instance's share must be configured (ConfigError)."""
    if spec is not None:
        cfg.instances = dict(spec.instances)
        cfg.model_distribution = {k: list(v) for k, v in spec.model_distribution.items()}
        cfg.routing_strategy = spec.routing_strategy
    if instance is not None:
        cfg.instance = instance
    if cfg.instance is None:
        return
    known = {*cfg.instances, *cfg.model_distribution}
    if cfg.instance not in known:
        raise ConfigError([f"--instance: '{cfg.instance}' is not an instance of the cluster "
                           f"({', '.join(sorted(known)) or 'none configured'})"])
    share = cfg.model_distribution.get(cfg.instance, [])
    have = {m.model_id for m in cfg.models}
    if spec is not None:
        for entry in spec.models:
            if entry.model_id in share and entry.model_id not in have:
                cfg.models.append(entry.model_copy(deep=True))
                have.add(entry.model_id)
    missing = [m for m in share if m not in have]
    if missing:
        raise ConfigError([f"model_distribution.{cfg.instance}: no model entry for {', '.join(missing)} "
                           f"(add it to the cluster file's or this server's models)"])


def cluster_models(cfg: ClusterKeys) -> Dict[str, List[str]]:
    """Model id -> the instances serving it, in the order of ``model_distribution``."""
    return cfg.model_instances()
