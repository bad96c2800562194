"""API keys: where they come from (inline, ``${ENV}``, a keys file, SHA-256
hashes), how a request presents one, and the admin/ordinary roles.

Keys are held only as SHA-256 digests; a presented key is hashed and compared
with every stored digest in constant time (``hmac.compare_digest``)."""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from flask import Response, g, request

from ..config import ConfigError
from ..config_schema import ConfigFile
from ..errors import ApiError, error_response

log = logging.getLogger("kolosal.server.auth")

HASH_PREFIX = "sha256:"


@dataclass(frozen=True)
class ApiKey:
    digest: bytes
    admin: bool

    @property
    def key_id(self) -> str:
        """What logs and rate-limit keys show: a prefix of the key's hash, never the key."""
        return "key_" + self.digest.hex()[:12]


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_key(text: str, admin: bool, where: str) -> ApiKey:
    """``KEY`` or ``sha256:HEX`` (the hash of the key, so the file holds no secret)."""
    text = text.strip()
    if text.lower().startswith(HASH_PREFIX):
        hexdigest = text[len(HASH_PREFIX):]
        try:
            raw = bytes.fromhex(hexdigest)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError([f"{where}: a hashed key must be 'sha256:' and 64 hex digits"])
        return ApiKey(raw, admin)
    if not text:  # e.g. "${KEY:-}" with KEY unset: refusing to start beats silently turning keys off
        raise ConfigError([f"{where}: the API key is empty (an environment variable that is empty or unset with "
                           f"an empty default?); set it or remove the entry"])
    return ApiKey(digest(text), admin)


def read_keys_file(path: str) -> List[ApiKey]:
    """One key per line: ``KEY`` or ``sha256:HEX``, optionally followed by the
    role ``admin``; blank lines and ``#`` comments are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError([f"api_keys_file: cannot read the API keys file {path}: {e.strerror or e}"]) from None
    keys = []
    for n, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        role = parts[1].lower() if len(parts) > 1 else "user"
        if len(parts) > 2 or role not in ("admin", "user"):
            raise ConfigError([f"{path}:{n}: expected 'KEY' or 'KEY admin' (KEY may be sha256:HEX)"])
        keys.append(parse_key(parts[0], role == "admin", f"{path}:{n}"))
    return keys


class KeyStore:
    """The configured keys; a keys file is re-read when it changes, so removing
    a line revokes that key without a restart."""

    RECHECK_SECONDS = 1.0

    def __init__(self, inline: List[ApiKey], files: List[str], required: bool, header: str) -> None:
        self._inline = inline
        self._files = files
        self.required = required
        self.header = header
        self._lock = threading.Lock()
        self._stamp: Tuple = ()
        self._checked = 0.0
        self._keys: List[ApiKey] = list(inline)
        self._reload(force=True)

    @property
    def enabled(self) -> bool:
        return bool(self._keys) or bool(self._files)

    def _file_stamp(self) -> Tuple:
        out = []
        for p in self._files:
            try:
                st = os.stat(p)
                out.append((p, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((p, None, None))
        return tuple(out)

    def _reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.RECHECK_SECONDS:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp and not force:
            return
        loaded: List[ApiKey] = []
        for path in self._files:
            try:
                loaded.extend(read_keys_file(path))
            except ConfigError as e:
                if force:
                    raise
                # fail closed: a deleted, unreadable or broken file grants nothing until it is fixed
                log.error("API keys file refused, none of its keys are accepted: %s", e)
        self._keys, self._stamp = list(self._inline) + loaded, stamp
        if not force:
            log.info("API keys file changed: %d keys", len(self._keys))

    def lookup(self, given: str) -> Optional[ApiKey]:
        if self._files:
            with self._lock:
                self._reload()
        d = digest(given)
        found = None
        for k in self._keys:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(d, k.digest):
                found = k
        return found


def key_store(cfg: ConfigFile) -> KeyStore:
    """The keys of ``cfg.settings.keys`` (an empty key is a configuration error). Keys are required when any are
    configured, unless ``auth.enabled: false`` or ``auth.require_api_key: false`` says otherwise."""
    ks = cfg.settings.keys
    store = KeyStore([parse_key(e.text, e.admin, e.where) for e in ks.entries], list(ks.files), required=True,
                     header=ks.header)
    if ks.demanded and not store.enabled:
        raise ConfigError(["auth.require_api_key: no API keys are configured (api_keys, admin_api_keys or "
                           "api_keys_file)"])
    store.required = store.enabled and not ks.optional
    return store


def presented_key(header: str) -> Optional[str]:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    value = request.headers.get(header)
    return value.strip() if value is not None else None


def current_key(store: KeyStore) -> Tuple[Optional[str], Optional[ApiKey]]:
    """(the key as sent, the matching ApiKey), computed once per request."""
    if "kolosal_key" not in g:
        given = presented_key(store.header) if store.enabled else None
        g.kolosal_key = (given, store.lookup(given) if given else None)
    return g.kolosal_key


def _unauthorized(given: Optional[str]) -> Response:
    msg = ("Incorrect API key provided." if given else
           "Missing API key: send 'Authorization: Bearer KEY'.")
    resp = error_response(ApiError(401, msg, code="invalid_api_key"))
    resp.headers["WWW-Authenticate"] = 'Bearer realm="kolosal"' + (', error="invalid_token"' if given else "")
    return resp


def check_key(store: KeyStore, level: str) -> Optional[Response]:
    """The key check of the current request for an endpoint at ``level``
    (``"public"``, ``"user"`` or ``"admin"``): 401 without a valid key where
    keys are required, 403 without an admin key where one is needed. Records
    ``kolosal.key_id`` for the access log."""
    if not store.enabled or level == "public":
        return None
    given, key = current_key(store)
    if given and key is None:
        return _unauthorized(given)
    if key is None and store.required:
        return _unauthorized(None)
    if key is not None:
        request.environ["kolosal.key_id"] = key.key_id
    if level == "admin" and not (key and key.admin):
        return error_response(ApiError(403, "This endpoint needs an admin API key.", code="admin_key_required"))
    return None
