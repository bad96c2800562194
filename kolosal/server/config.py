"""Loading the configuration: JSON or YAML by extension, ``${ENV}``
substitution, models inline or in a separate models file, relative paths
resolved against the install root, and errors that name the offending key
(``models[1].load_params.n_ctx: expected integer``).

The install root (docs/configuration.md, "Paths"): ``--root``, else
``server.root_dir`` (relative to the config file's folder), else the config
file's folder, or that folder's parent when it is named ``config`` (the
layout ``config/production.json``, ``config/models.json``, ``models/``,
``logs/``). Model files, log files and model directories resolve against
it; the files that belong to the configuration (``inference.models_file``,
``api_keys_file``) are looked up beside the config file first. Without
``inference.models_file`` and without models listed inline, a
``models.json`` (or ``.yaml``/``.yml``) beside the config file is read."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Type, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError

from .config_schema import ConfigFile, ModelEntry, ModelsFile
from .settings import normalise

__all__ = ["ConfigError", "load_config", "read_models_file", "read_models_document", "validation_messages",
           "format_loc", "check_model_files", "ConfigFile", "ModelEntry", "clean_loc", "effective_config", "model_entry"]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

_TYPE_WORDS = {
    "int": "expected integer", "float": "expected number", "bool": "expected boolean",
    "string": "expected string", "list": "expected list", "dict": "expected object", "model": "expected object",
}


class ConfigError(ValueError):
    """The configuration is invalid; ``errors`` lists ``path: problem`` lines."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def format_loc(loc: Iterable[Union[str, int]], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|\[key\]|constrained-[a-z]+|[a-z-]+\[.*\])$")


def clean_loc(loc: Iterable[Union[str, int]]) -> List[Union[str, int]]:
    """Drop pydantic's union/validator tags (``str``, ``list[...]``) from an error location."""
    return [p for p in loc if not (isinstance(p, str) and _TYPE_TAG.match(p))]


def _problem(err: Dict[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    stem = kind.split("_")[0]
    if kind.endswith(("_type", "_parsing", "_from_float")) and stem in _TYPE_WORDS:
        return _TYPE_WORDS[stem]
    msg = err.get("msg", "invalid value")
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def validation_messages(exc: ValidationError, prefix: str = "") -> List[str]:
    lines = []
    for err in exc.errors():
        where = format_loc(clean_loc(err["loc"]), prefix) or "(top level)"
        lines.append(f"{where}: {_problem(err)}")
    return lines


def _substitute(value: Any, where: str, errors: List[str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, format_loc([k], where), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, format_loc([i], where), errors) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def repl(m: "re.Match[str]") -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            errors.append(f"{where}: environment variable {name} is not set")
            return ""
        return _ENV.sub(repl, value)
    return value


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigError([f"{path}: unknown config format (use .json, .yaml or .yml)"])
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError([f"{path}: not valid {path.suffix[1:].upper()}: {e}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: (top level): expected object"])
    errors: List[str] = []
    data = _substitute(data, "", errors)
    if errors:
        raise ConfigError(errors)
    return data


def _read_naming(path: Path) -> Any:
    """``_read`` for a file besides the main config: every error line names it."""
    try:
        return _read(path)
    except ConfigError as e:
        raise ConfigError([x if x.startswith(str(path)) else f"{path}: {x}" for x in e.errors]) from None


MODELS_FILE_NAMES = ("models.json", "models.yaml", "models.yml")
CONFIG_FOLDER = "config"


def _resolve(p: Optional[str], base: Path) -> Optional[str]:
    if not p:
        return p
    path = Path(os.path.expanduser(p))
    return os.path.normpath(path if path.is_absolute() else base / path)


def install_root(config_file: Union[str, Path]) -> Path:
    """The root a config (or models) file's relative paths resolve against when
    nothing names one: its folder, or the parent of a folder named ``config``."""
    folder = Path(config_file).resolve().parent
    return folder.parent if folder.name.lower() == CONFIG_FOLDER else folder


def _config_file(p: str, folder: Path, root: Path) -> str:
    """A file that belongs to the configuration: beside the config file, else under the root."""
    beside = _resolve(p, folder)
    if beside and (Path(p).expanduser().is_absolute() or Path(beside).exists()):
        return beside
    return _resolve(p, root) or p


def _resolve_models(models: List[ModelEntry], base: Path, source: Optional[Path] = None) -> None:
    for m in models:
        m._given = m.file
        m._source = str(source) if source else None
        m._root = str(base)
        if m.path:
            m.path = _resolve(m.path, base)
        if m.model_path:
            m.model_path = _resolve(m.model_path, base)
        for adapter in m.load_params.lora or []:
            adapter.path = _resolve(adapter.path, base) or adapter.path
        if m.load_params.draft_model:
            m.load_params.draft_model = _resolve(m.load_params.draft_model, base)


_WithModels = TypeVar("_WithModels", bound=BaseModel)  # a schema with a ``models`` list of ModelEntry


def read_models_document(path: Union[str, Path], schema: Type[_WithModels],
                         root: Optional[Union[str, Path]] = None) -> _WithModels:
    """A file holding model entries (``models``), read (JSON or YAML) and validated
    against ``schema``; ConfigError lines name the file. The entries' paths resolve
    against ``root`` (default: ``install_root(path)``)."""
    path = Path(path).resolve()
    data = _read_naming(path)
    try:
        doc = schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError([f"{path}: {m}" for m in validation_messages(e)]) from None
    _resolve_models(doc.models, Path(root).resolve() if root is not None else install_root(path), path)
    return doc


def read_models_file(path: Union[str, Path], root: Optional[Union[str, Path]] = None) -> List[ModelEntry]:
    """Models from a ``models.json``/``.yaml`` file (``{"models": [...]}``); their
    paths resolve against ``root`` (default: ``install_root(path)``)."""
    return read_models_document(path, ModelsFile, root).models


def _root_of(cfg: ConfigFile, path: Optional[Path], root: Optional[Union[str, Path]]) -> Path:
    if root is not None:
        return Path(os.path.expanduser(str(root))).resolve()
    if cfg.server.root_dir:
        folder = path.parent if path is not None else Path.cwd()
        return Path(_resolve(cfg.server.root_dir, folder) or folder).resolve()
    return install_root(path) if path is not None else Path.cwd()


def load_config(path: Optional[Union[str, Path]] = None, data: Optional[Dict[str, Any]] = None,
                root: Optional[Union[str, Path]] = None) -> ConfigFile:
    """Validated configuration from a file (or a dict: paths relative to ``root``
    or ``server.root_dir``, else to the working directory). ``root`` (``--root``)
    overrides ``server.root_dir`` and the root found from the file's place."""
    if path is not None:
        path = Path(path).resolve()
        data = _read(path)
    elif data is not None:
        errors: List[str] = []
        data = _substitute(dict(data), "", errors)
        if errors:
            raise ConfigError(errors)
    try:
        cfg = ConfigFile.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(validation_messages(e)) from None
    base = _root_of(cfg, path, root)
    if not base.is_dir():
        where = "--root" if root is not None else "server.root_dir"
        raise ConfigError([f"{where}: not a directory: {base}"])
    cfg.server.root_dir = str(base)
    folder = path.parent if path is not None else base
    _resolve_models(cfg.models, base, path)
    for section in (cfg.logging,):
        section.file_path = _resolve(section.file_path, base)
        section.file = _resolve(section.file, base)
    # A handler naming file_path's file takes that file over (the guide's
    # production.json with its handlers block pasted in); two handlers on one
    # file would write each line twice and lose lines when they rotate.
    files: Dict[str, str] = {}
    for name, handler in cfg.logging.handlers.items():
        handler.filename = _resolve(handler.filename, base)
        if handler.filename in files:  # two handlers rotating one file write each line twice and lose lines
            raise ConfigError([f"logging.handlers.{name}.filename: {handler.filename} is already written by "
                               f"{files[handler.filename]}; one file takes one handler"])
        if handler.filename:
            files[handler.filename] = f"logging.handlers.{name}"
        if handler.source(name) == "access":  # a handler for access lines turns them on
            if "access_log" in cfg.logging.model_fields_set and not cfg.logging.access_log:
                raise ConfigError([f"logging.handlers.{name}: receives the access lines, but logging.access_log "
                                   f"is false"])
            cfg.logging.access_log = True
    for keys in (cfg.security, cfg.auth):
        if keys.api_keys_file:
            keys.api_keys_file = _config_file(keys.api_keys_file, folder, base)
    cfg.security.model_directories = [_resolve(d, base) or d for d in cfg.security.model_directories]
    if cfg.inference.models_file:
        given = cfg.inference.models_file
        cfg.inference.models_file = _config_file(given, folder, base)
        if not Path(cfg.inference.models_file).is_file():
            beside = _resolve(given, folder)
            also = f" (nor beside the config file: {beside})" if beside != cfg.inference.models_file else ""
            raise ConfigError([f"inference.models_file: models file not found: {cfg.inference.models_file}{also}"])
    elif path is not None and not cfg.models:  # models listed inline are the whole list
        beside = [folder / n for n in MODELS_FILE_NAMES if (folder / n).is_file() and folder / n != path]
        if beside:
            cfg.inference.models_file = str(beside[0])
    if cfg.inference.models_file:
        cfg.models.extend(read_models_file(cfg.inference.models_file, base))
    normalise(cfg)  # both vocabularies merge without conflict (ConfigError otherwise)
    return cfg


def check_model_files(cfg: ConfigFile) -> None:
    """Every model file must exist; ids and aliases must be unique and
    ``server.default_model`` must name one of them."""
    errors: List[str] = []
    seen: Dict[str, int] = {}
    per_source: Dict[Optional[str], int] = {}
    for i, m in enumerate(cfg.models):
        key = "path" if m.path else "model_path"
        local = per_source[m._source] = per_source.get(m._source, -1) + 1
        if not Path(m.file).is_file():
            where = f" ({m._source}: models[{local}])" if m._source else ""
            how = ""
            root = m._root or cfg.server.root_dir
            if m._given and not Path(os.path.expanduser(m._given)).is_absolute() and root:
                how = f"; '{m._given}' is relative to the install root {root}"
            errors.append(f"models[{i}].{key}: model file not found: {m.file}{where}{how}")
        if m.model_id in seen:
            errors.append(f"models[{i}].{'id' if m.id else 'engine_id'}: duplicate model id '{m.model_id}'"
                          f" (also models[{seen[m.model_id]}])")
        seen.setdefault(m.model_id, i)
    names = set(seen)
    for i, m in enumerate(cfg.models):
        for alias in m.aliases:
            if alias in names:
                errors.append(f"models[{i}].aliases: '{alias}' already names a model")
            names.add(alias)
    if cfg.server.default_model and cfg.models and cfg.server.default_model not in names:
        errors.append(f"server.default_model: '{cfg.server.default_model}' is not a model id or alias")
    if errors:
        raise ConfigError(errors)


_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@/\s]+(?=@)")


def mask_uri_passwords(text: str) -> str:
    """``redis://:secret@host`` -> ``redis://:***@host`` (user names stay)."""
    return _URI_PASSWORD.sub(lambda m: m.group("head") + "***", text)


def _mask_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _mask_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_strings(v) for v in value]
    return mask_uri_passwords(value) if isinstance(value, str) else value


def effective_config(cfg: ConfigFile) -> Dict[str, Any]:
    """The config as printed by ``--check-config``: keys and passwords inside
    URIs (``storage_uri: redis://:secret@host``) masked."""
    out = _mask_strings(cfg.model_dump(mode="json"))
    for section in ("security", "auth"):
        for key in ("api_keys", "admin_api_keys"):
            out[section][key] = ["***" for _ in out[section][key]]
    if out["auth"].get("api_key") is not None:
        out["auth"]["api_key"] = "***"
    return out


def model_entry(model_id: str, path: str, **extra: Any) -> ModelEntry:
    return ModelEntry(id=model_id, path=os.path.abspath(os.path.expanduser(path)), **extra)


