"""Model files: which ones ``POST /engines`` may load, and how a file is
recognised again (its size and modification time, its SHA-256).

Only regular files under the configured model directories may be loaded,
after resolving ``..`` and symlinks. Directories come from
``security.model_directories``; when that is empty and API keys are
configured, from the folders of the configured models; with neither (a local
server without keys) any path may be loaded. A path outside the directories
is refused with the same answer whether or not it exists, so the endpoint
cannot be used to probe the file system."""
from __future__ import annotations

import hashlib
import os
from typing import List, Optional, Tuple

from ..config_schema import ConfigFile
from ..errors import ApiError


def allowed_directories(cfg: ConfigFile, auth_enabled: bool) -> Optional[List[str]]:
    """Real paths of the allowed folders, or None for no restriction."""
    dirs = list(cfg.security.model_directories)
    if not dirs and auth_enabled:
        dirs = sorted({os.path.dirname(m.file) for m in cfg.models})
    if not dirs and not auth_enabled:
        return None
    return [os.path.realpath(os.path.expanduser(d)) for d in dirs]


def resolve_model_path(given: str, dirs: Optional[List[str]]) -> str:
    """The real path to load for ``given`` (relative paths: against the first
    directory). Raises 403 ``model_path_not_allowed`` when outside ``dirs``."""
    if dirs is None:
        return os.path.abspath(os.path.expanduser(given))
    refused = ApiError(403, "model_path must name a file under one of the server's model directories.",
                       param="model_path", code="model_path_not_allowed")
    if "\x00" in given or not dirs:
        raise refused
    path = given if os.path.isabs(given) else os.path.join(dirs[0], given)
    real = os.path.realpath(path)
    if not any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in dirs):
        raise refused
    return real


def file_stamp(path: str) -> Optional[Tuple[int, int]]:
    """(size, mtime in ns) of ``path``, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
