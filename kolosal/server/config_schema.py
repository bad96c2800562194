"""Pydantic models of the configuration file (JSON or YAML).

Both documented shapes validate against ``ConfigFile``: the JSON one
(``server``/``logging``/``security``/``inference`` with ``engine_id`` model
entries) and the YAML one (``server``/``logging``/``features``/``auth`` with
``id``/``path``/``load_params`` model entries). Unknown keys are errors.

Two spellings of one setting are folded here, at validation
(``server.request_timeout`` into ``request_timeout_seconds``,
``logging.file`` into ``file_path``); settings given in two parallel
sections (keys, rate limits, CORS) are merged by ``ConfigFile.settings``
(``settings.py``). The rest of the server reads those, not the raw spellings.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ByteSize, ConfigDict, Field, PrivateAttr, field_validator, model_validator

if TYPE_CHECKING:
    from .settings import Settings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PRIORITIES = ("idle", "low", "below_normal", "normal", "above_normal", "high", "realtime")


def log_level(value: str) -> str:
    """``"info"`` -> ``"INFO"``, ``WARN`` -> ``WARNING``; ValueError for anything else."""
    name = str(value).strip().upper()
    name = "WARNING" if name == "WARN" else name
    if name not in LOG_LEVELS:
        raise ValueError(f"'{value}' is not a log level ({', '.join(LOG_LEVELS)})")
    return name


class ServerSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_connections: int = Field(100, ge=1)
    worker_threads: int = Field(16, ge=1)
    request_timeout_seconds: Optional[int] = Field(None, ge=1)  # unset: inference.job_timeout_seconds alone
    request_timeout: Optional[int] = Field(None, ge=1)  # YAML spelling, folded into request_timeout_seconds
    keep_alive_timeout_seconds: int = Field(60, ge=1)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    # on SIGTERM, /health answers 503 at once but requests are still taken this long, so that a load
    # balancer's health check takes the instance out first (docs/scaling.md); then the drain starts
    drain_delay_seconds: float = Field(0.0, ge=0)
    sse_ping_seconds: float = Field(5.0, gt=0)
    max_queued_requests: int = Field(256, ge=1)
    max_request_body_mb: float = Field(64.0, gt=0)
    max_tokens_limit: Optional[int] = Field(None, ge=1)
    max_embedding_inputs: int = Field(2048, ge=1)
    # bounds on one request (docs/security.md, "Request limits"); /openapi.json states them
    max_json_depth: int = Field(64, ge=2, le=500)  # nesting of arrays/objects in a JSON body
    max_prompts: int = Field(64, ge=1)  # prompts in one /completions request
    max_generations_per_request: int = Field(64, ge=1)  # prompts x n
    max_stop_sequences: int = Field(16, ge=1, le=16)  # the engine takes at most 16
    max_stop_chars: int = Field(512, ge=1)  # length of one stop string
    max_grammar_chars: int = Field(65536, ge=1)
    max_grammar_depth: int = Field(32, ge=1)  # nested ( ... ) groups in a GBNF grammar
    max_json_schema_chars: int = Field(65536, ge=1)  # response_format / tool parameter schemas, as JSON
    max_json_schema_depth: int = Field(32, ge=1)
    # Host header names accepted (DNS rebinding); "*" accepts any. Unset: any when API keys are
    # required, else "localhost" and IP addresses.
    allowed_hosts: Optional[List[str]] = None
    default_model: Optional[str] = Field(None, min_length=1)  # answers requests naming an unknown model
    # the install root relative paths resolve against (config.py: --root, else this, else the config's folder,
    # or its parent when that folder is named "config"); after loading, the root in use
    root_dir: Optional[str] = None
    compression: bool = False  # gzip/brotli/zstd for JSON answers of at least compression_min_bytes; never SSE
    compression_level: int = Field(6, ge=1, le=9)
    compression_min_bytes: int = Field(500, ge=0)
    process_priority: Optional[str] = None  # one of PRIORITIES, applied at start (process.py)
    cpu_affinity: Optional[Union[List[int], int, str]] = None  # CPU numbers, or a mask (255, "0xFF")
    # Waitress has one inactivity timeout (channel_timeout = keep_alive_timeout_seconds), no separate ones
    read_timeout_seconds: Optional[float] = None
    write_timeout_seconds: Optional[float] = None

    @model_validator(mode="after")
    def _fold_spellings(self) -> "ServerSection":
        if self.request_timeout_seconds is None:
            self.request_timeout_seconds = self.request_timeout
        return self

    @field_validator("process_priority")
    @classmethod
    def _priority(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        name = str(v).strip().lower().replace(" ", "_").replace("-", "_").replace("abovenormal", "above_normal") \
            .replace("belownormal", "below_normal")
        if name not in PRIORITIES:
            raise ValueError(f"'{v}' is not a priority ({', '.join(PRIORITIES)})")
        return name

    @field_validator("cpu_affinity")
    @classmethod
    def _affinity(cls, v: Any) -> Optional[List[int]]:
        if v is None:
            return v
        if isinstance(v, list):
            if not v or any(c < 0 for c in v):
                raise ValueError("expected a non-empty list of CPU numbers (0, 1, ...)")
            return sorted(set(v))
        try:
            mask = int(v, 0) if isinstance(v, str) else int(v)
        except ValueError:
            raise ValueError(f"'{v}' is neither a list of CPU numbers nor a mask like \"0xFF\"") from None
        if mask <= 0:
            raise ValueError("the CPU mask selects no CPU")
        return [i for i in range(mask.bit_length()) if mask >> i & 1]

    @field_validator("read_timeout_seconds", "write_timeout_seconds")
    @classmethod
    def _no_such_timeout(cls, v: Optional[float], info: Any) -> Optional[float]:
        if v is not None:
            raise ValueError(f"Waitress has no separate {info.field_name.split('_')[0]} timeout; "
                             f"server.keep_alive_timeout_seconds (Waitress' channel_timeout) closes a connection "
                             f"that has sent and received nothing for that long, and "
                             f"server.request_timeout_seconds bounds each request")
        return v


LOG_SOURCES = ("all", "server", "access", "inference", "performance")
HANDLER_TYPES = ("rotating_file", "timed_rotating_file", "console")
ROTATE_WHEN = ("S", "M", "H", "D", "MIDNIGHT", "W0", "W1", "W2", "W3", "W4", "W5", "W6")


class LogHandler(_Section):
    """One entry of ``logging.handlers`` (docs/configuration.md, "Logging")."""

    type: str
    level: Optional[str] = None  # unset: every line the logging.level lets through
    logs: Optional[Literal["all", "server", "access", "inference", "performance"]] = None  # unset: by the name
    format: Optional[Literal["json", "text"]] = None  # unset: logging.format
    filename: Optional[str] = None
    max_size: Optional[ByteSize] = None  # rotating_file: 50MB (10^6 bytes), 50MiB (2^20), or bytes
    backup_count: Optional[int] = Field(None, ge=0)
    when: Optional[str] = None  # timed_rotating_file: S, M, H, D, midnight or W0..W6 (Monday..Sunday)
    interval: Optional[int] = Field(None, ge=1)
    retention_days: Optional[int] = Field(None, ge=1)  # timed_rotating_file: one file a day, kept this many days
    utc: bool = False
    stream: Literal["stderr", "stdout"] = "stderr"  # console

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in HANDLER_TYPES:
            raise ValueError(f"unknown handler type '{v}' ({', '.join(HANDLER_TYPES)})")
        return v

    @field_validator("level")
    @classmethod
    def _level(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else log_level(v)

    @field_validator("when")
    @classmethod
    def _when(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v.upper() not in ROTATE_WHEN:
            raise ValueError(f"'{v}' is not a rotation time (S, M, H, D, midnight, W0..W6)")
        return v

    @model_validator(mode="after")
    def _fits_the_type(self) -> "LogHandler":
        given = self.model_fields_set
        only = {"console": {"stream"}, "rotating_file": {"filename", "max_size", "backup_count"},
                "timed_rotating_file": {"filename", "when", "interval", "retention_days", "backup_count", "utc"}}
        own = {k for keys in only.values() for k in keys} - only[self.type]
        wrong = sorted(given & own)
        if wrong:
            raise ValueError(f"not for a {self.type} handler: {', '.join(wrong)}")
        if self.type != "console" and not self.filename:
            raise ValueError(f"a {self.type} handler needs a filename")
        if self.retention_days is not None and given & {"backup_count", "when", "interval"}:
            raise ValueError("retention_days keeps one file a day for that many days; give either it or "
                             "when/interval/backup_count")
        return self

    def source(self, name: str) -> str:
        """What the handler receives: ``logs``, else guessed from its name (``access_file`` -> access)."""
        if self.logs:
            return "inference" if self.logs == "performance" else self.logs
        lowered = name.lower()
        for prefix, source in (("access", "access"), ("inference", "inference"), ("completion", "inference"),
                               ("performance", "inference")):
            if lowered.startswith(prefix):
                return source
        return "all"


class LoggingSection(_Section):
    level: str = "INFO"
    file_path: Optional[str] = None
    file: Optional[str] = None  # YAML spelling, folded into file_path
    max_file_size_mb: float = Field(100, gt=0)
    max_files: int = Field(10, ge=1)
    console_output: bool = True
    access_log: bool = False
    format: Literal["json", "text"] = "json"
    log_prompts: bool = False
    handlers: Dict[str, LogHandler] = Field(default_factory=dict)  # named handlers, besides file_path/console

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        return log_level(v)

    @model_validator(mode="after")
    def _fold_spellings(self) -> "LoggingSection":
        if self.file_path is None:
            self.file_path = self.file
        return self


class RateLimiting(_Section):
    enabled: bool = False
    requests_per_minute: Optional[int] = Field(None, ge=1)
    burst_size: Optional[int] = Field(None, ge=1)
    max_requests: Optional[int] = Field(None, ge=1)
    window_size: Optional[int] = Field(None, ge=1)
    storage_uri: Optional[str] = None  # memory:// (default) or redis://host:port/db
    tokens_per_minute: Optional[int] = Field(None, ge=1)  # per-key completion token quota

    @model_validator(mode="after")
    def _need_a_limit(self) -> "RateLimiting":
        if self.enabled and not (self.requests_per_minute or self.max_requests or self.tokens_per_minute):
            raise ValueError("enabled but no limit: set requests_per_minute (and burst_size) or max_requests "
                             "and window_size")
        if self.max_requests and not self.window_size:
            raise ValueError("max_requests needs window_size (seconds)")
        return self


class _KeySettings(_Section):
    api_keys: List[str] = Field(default_factory=list)
    admin_api_keys: List[str] = Field(default_factory=list)
    api_keys_file: Optional[str] = None
    api_key_header: Optional[str] = None


class SecuritySection(_KeySettings):
    cors_enabled: bool = False
    cors_origins: List[str] = Field(default_factory=lambda: ["*"])
    cors_allow_credentials: bool = False
    rate_limiting: RateLimiting = Field(default_factory=RateLimiting)
    public_health: bool = True
    public_metrics: bool = True
    trusted_proxies: List[str] = Field(default_factory=list)
    model_directories: List[str] = Field(default_factory=list)


class AuthSection(_KeySettings):
    enabled: bool = False
    require_api_key: bool = False
    api_key: Optional[str] = None
    rate_limit: RateLimiting = Field(default_factory=RateLimiting)


class CorsSection(_Section):
    enabled: bool = False
    origins: List[str] = Field(default_factory=lambda: ["*"])
    allow_credentials: bool = False


class FeaturesSection(_Section):
    health_check: bool = True  # false: no /health endpoint
    metrics: bool = True  # false: no metrics endpoints
    console: bool = True  # false: no web console (/ answers only Ollama's probe line)


class InferenceSection(_Section):
    default_context_size: int = Field(4096, ge=0)
    default_gpu_layers: int = Field(0, ge=-1)
    default_parallel: int = Field(4, ge=1)
    model_cache_size_gb: Optional[float] = Field(None, ge=0)
    swap_threshold: Optional[float] = Field(None, gt=0, le=1)  # highest system memory use a load may cause
    keep_alive_seconds: Optional[float] = Field(None, gt=0)  # unload models idle this long
    model_load_timeout_seconds: float = Field(300.0, gt=0)  # a request waits this long for a model to load
    watch_model_files: bool = False  # reload a loaded model when its file changes
    job_timeout_seconds: float = Field(600.0, gt=0)
    models_file: Optional[str] = None
    # who may cause a registered model to be loaded by using it: anyone, admin keys only, or nobody
    # (then only start-up and POST /engines load models)
    load_on_demand: Literal["any", "admin", "off"] = "any"


class LoraAdapter(_Section):
    """A LoRA adapter GGUF for the model and its global scale (``POST /lora-adapters`` changes it)."""

    path: str = Field(..., min_length=1)
    scale: float = 1.0


KvCacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]


# What /openapi.json says of rpc_servers: host:port with a port of 1-65535, a
# host that is a loopback or private IPv4 address or a name (checked when the
# model loads), no endpoint twice. The validator below gives the messages.
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PRIVATE_OR_NAME = (r"(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|10\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
                    r"|192\.168\.[0-9]{1,3}\.[0-9]{1,3}|172\.(1[6-9]|2[0-9]|3[01])\.[0-9]{1,3}\.[0-9]{1,3}"
                    r"|[A-Za-z][A-Za-z0-9-]*(\.[A-Za-z0-9-]+)*)")
RPC_ENDPOINT_PATTERN = "^" + _PRIVATE_OR_NAME + ":" + _PORT + "$"


def _rpc_servers_schema(schema: Dict[str, Any]) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "array":
            branch["items"] = {"type": "string", "pattern": RPC_ENDPOINT_PATTERN}
            branch["uniqueItems"] = True


class LoadParams(_Section):
    n_ctx: Optional[int] = Field(None, ge=0)
    n_gpu_layers: Optional[int] = Field(None, ge=-1)
    n_parallel: Optional[int] = Field(None, ge=1)
    n_batch: Optional[int] = Field(None, ge=1)
    n_ubatch: Optional[int] = Field(None, ge=1)
    n_threads: Optional[int] = Field(None, ge=0)
    main_gpu: Optional[int] = Field(None, ge=0)
    tensor_split: Optional[List[float]] = None
    use_mmap: Optional[bool] = None  # default: read a CPU model into huge pages when it fits, else map the file
    use_mlock: Optional[bool] = None
    huge_pages: Optional[bool] = None  # transparent huge pages for the large CPU buffers (Linux; default true)
    pair_ubatches: Optional[bool] = None  # prompt chunks cut to even ubatches for kolosal's Q4_1 kernel (default true)
    embeddings: Optional[bool] = None
    seed: Optional[int] = None
    flash_attn: Optional[Literal["auto", "on", "off"]] = None
    chat_template: Optional[str] = None
    kv_unified: Optional[bool] = None  # all slots share one KV pool
    cache_ram_mib: Optional[int] = Field(None, ge=-1)  # host-memory prompt cache (0: off, -1: no limit)
    slot_prompt_similarity: Optional[float] = Field(None, ge=0, le=1)  # prompt share a slot's cache must cover to be reused
    # llama.cpp RPC workers (python -m kolosal.rpc_worker) that take the layers, as host:port. The protocol
    # has no authentication or encryption: loopback and private addresses only, unless allow_public_rpc.
    allow_public_rpc: Optional[bool] = None
    rpc_servers: Optional[List[str]] = Field(None, json_schema_extra=_rpc_servers_schema)
    reasoning_format: Optional[Literal["none", "deepseek", "auto"]] = None  # think block -> reasoning_content (default auto)
    chat_template_kwargs: Optional[Dict[str, Any]] = None  # extra chat template variables, e.g. enable_thinking
    lora: Optional[List[LoraAdapter]] = None  # LoRA adapters; requests pick scales by index with `lora: [{id, scale}]`
    # speculative decoding (while one request is in flight): a draft model, or n-gram lookup (spec_type: ngram)
    draft_model: Optional[str] = Field(None, min_length=1)
    spec_type: Optional[Literal["draft", "ngram"]] = None  # default: draft when draft_model is set
    n_draft: Optional[int] = Field(None, ge=1, le=256)  # most tokens proposed per step (16)
    draft_min: Optional[int] = Field(None, ge=0, le=256)  # fewer proposed: decode normally (0)
    p_min: Optional[float] = Field(None, ge=0, le=1)  # draft model: stop below this top-token probability (0)
    spec_ngram_n: Optional[int] = Field(None, ge=1, le=1024)  # n-gram lookup: n-gram length (12)
    # KV cache element types (llama.cpp's names); a quantized V cache needs flash_attn auto or on
    cache_type_k: Optional[KvCacheType] = None
    cache_type_v: Optional[KvCacheType] = None
    context_shift: Optional[bool] = None  # a full slot drops half its context after n_keep instead of ending
    # sampling defaults of every request under llama-server's names (dry_multiplier, samplers, ...)
    sampling: Optional[Dict[str, Any]] = None

    @field_validator("rpc_servers")
    @classmethod
    def _private_workers(cls, v: Optional[List[str]], info: Any) -> Optional[List[str]]:
        if v is None:
            return v
        from ..rpc_endpoints import check_endpoints
        # host names are resolved and checked when the model loads
        return check_endpoints(v, allow_public=bool(info.data.get("allow_public_rpc")), resolve=False)

    def engine_kwargs(self) -> Dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ModelEntry(_Section):
    """One model; accepts both the ``engine_id`` and the ``id`` vocabulary."""

    _source: Optional[str] = PrivateAttr(None)  # the models file it came from (absolute), for error messages
    _given: Optional[str] = PrivateAttr(None)  # its path as written, before resolving against the install root
    _root: Optional[str] = PrivateAttr(None)  # the folder its relative paths were resolved against

    id: Optional[str] = Field(None, min_length=1)
    engine_id: Optional[str] = Field(None, min_length=1)
    path: Optional[str] = Field(None, min_length=1)
    model_path: Optional[str] = Field(None, min_length=1)
    load_at_startup: Optional[bool] = None
    auto_load: Optional[bool] = None
    n_ctx: Optional[int] = Field(None, ge=0)
    n_gpu_layers: Optional[int] = Field(None, ge=-1)
    n_parallel: Optional[int] = Field(None, ge=1)
    main_gpu_id: Optional[int] = Field(None, ge=0)
    priority: Optional[Union[Literal["high", "medium", "low"], int]] = None
    pinned: bool = False  # never unloaded to make room or when idle
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    aliases: List[str] = Field(default_factory=list)  # other names requests may use for this model
    load_params: LoadParams = Field(default_factory=LoadParams)

    @model_validator(mode="after")
    def _need_id_and_path(self) -> "ModelEntry":
        if not (self.id or self.engine_id):
            raise ValueError("missing 'id' (or 'engine_id')")
        if not (self.path or self.model_path):
            raise ValueError("missing 'path' (or 'model_path')")
        return self

    @property
    def model_id(self) -> str:
        return self.id or self.engine_id  # type: ignore[return-value]

    @property
    def file(self) -> str:
        return self.path or self.model_path  # type: ignore[return-value]

    @property
    def startup(self) -> bool:
        flag = self.load_at_startup if self.load_at_startup is not None else self.auto_load
        return True if flag is None else flag

    def engine_kwargs(self, inference: InferenceSection) -> Dict[str, Any]:
        kw: Dict[str, Any] = {
            "n_ctx": inference.default_context_size,
            "n_gpu_layers": inference.default_gpu_layers,
            "n_parallel": inference.default_parallel,
        }
        for key in ("n_ctx", "n_gpu_layers", "n_parallel"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        if self.main_gpu_id is not None:
            kw["main_gpu"] = self.main_gpu_id
        kw.update(self.load_params.engine_kwargs())
        return kw


class ModelsFile(_Section):
    models: List[ModelEntry] = Field(default_factory=list)


# names the HAProxy configuration can carry unquoted (kolosal.cluster writes it)
CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ROUTABLE_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,199}$")
ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$")


class ClusterKeys(_Section):
    """The cluster a server belongs to (docs/scaling.md): ``instances`` (name ->
    ``host:port`` where the load balancer reaches it), ``model_distribution``
    (name -> the model ids it serves) and ``routing_strategy``; ``instance`` is
    this server's name. ``python -m kolosal.cluster haproxy`` writes the load
    balancer's configuration from them; ``/v1/models`` lists the whole cluster."""

    instances: Dict[str, str] = Field(default_factory=dict)
    model_distribution: Dict[str, List[str]] = Field(default_factory=dict)
    routing_strategy: Literal["round_robin", "least_conn"] = "round_robin"
    instance: Optional[str] = None

    @model_validator(mode="after")
    def _cluster_refs(self) -> "ClusterKeys":
        errors = []
        for name, addr in self.instances.items():
            if not CLUSTER_NAME.match(name):
                errors.append(f"instances.{name}: a name is letters, digits, '_', '.' and '-'")
            if not ADDRESS.match(addr) or not 0 < int(addr.rsplit(":", 1)[1]) < 65536:
                errors.append(f"instances.{name}: expected 'host:port', got '{addr}'")
        for name, models in self.model_distribution.items():
            if not CLUSTER_NAME.match(name):
                errors.append(f"model_distribution.{name}: a name is letters, digits, '_', '.' and '-'")
            elif self.instances and name not in self.instances:
                errors.append(f"model_distribution.{name}: not one of instances ({', '.join(self.instances)})")
            for i, m in enumerate(models):
                if not ROUTABLE_MODEL_ID.match(m):
                    errors.append(f"model_distribution.{name}[{i}]: '{m}' cannot be routed: a model id here is "
                                  f"letters, digits and _ . : / @ + -")
        if self.instance is not None and self.instance not in {*self.instances, *self.model_distribution}:
            errors.append(f"instance: '{self.instance}' is not an instance of the cluster")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def model_instances(self) -> Dict[str, List[str]]:
        """Model id -> the instances serving it, in the order of ``model_distribution``."""
        out: Dict[str, List[str]] = {}
        for name, models in self.model_distribution.items():
            for m in models:
                out.setdefault(m, []).append(name)
        return out


class ConfigFile(ClusterKeys):
    server: ServerSection = Field(default_factory=ServerSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    security: SecuritySection = Field(default_factory=SecuritySection)
    auth: AuthSection = Field(default_factory=AuthSection)
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    cors: CorsSection = Field(default_factory=CorsSection)
    inference: InferenceSection = Field(default_factory=InferenceSection)
    models: List[ModelEntry] = Field(default_factory=list)

    @property
    def settings(self) -> "Settings":
        """Keys, rate limits and CORS from both vocabularies, as one object (ConfigError if they conflict)."""
        from .settings import normalise
        return normalise(self)
