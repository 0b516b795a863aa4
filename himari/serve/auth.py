"""API-key authentication: keys from ``HIMARI_API_KEY`` or a file, compared in constant time, never logged.

A key file holds one key per line (blank lines and ``#`` comments ignored). ``HIMARI_API_KEY`` may hold several keys
separated by commas (for rotation). Keys shorter than 16 characters are refused: they are guessable.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from himari.errors import ConfigError

API_KEY_ENV = "HIMARI_API_KEY"
API_KEY_HEADER = "X-API-Key"
MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys. ``repr`` never shows them."""

    keys: tuple[bytes, ...] = field(repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, presented: str | None) -> bool:
        """Constant-time comparison against every key (``hmac.compare_digest``; no early exit across keys)."""
        if presented is None or not self.keys:
            return False
        candidate = presented.encode("utf-8", errors="replace")
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(candidate, key)
        return ok

    def __repr__(self) -> str:
        return f"ApiKeys(n={len(self.keys)})"


def _validated(raw: list[str], where: str) -> tuple[bytes, ...]:
    keys = []
    for i, key in enumerate(raw, start=1):
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"{where}: key {i} is shorter than {MIN_KEY_LENGTH} characters")
        if any(ch.isspace() for ch in key):
            raise ConfigError(f"{where}: key {i} contains whitespace")
        keys.append(key.encode("utf-8"))
    return tuple(keys)


def load_api_keys(key_file: str | Path | None = None, environ: dict[str, str] | None = None) -> ApiKeys:
    """Keys from ``key_file`` (if given) plus ``HIMARI_API_KEY``; empty when neither is set."""
    env = os.environ if environ is None else environ
    keys: list[bytes] = []
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read API key file ({exc.strerror})") from None
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not lines:
            raise ConfigError(f"{path}: API key file holds no key")
        keys.extend(_validated(lines, str(path)))
    raw_env = env.get(API_KEY_ENV, "").strip()
    if raw_env:
        keys.extend(_validated([k.strip() for k in raw_env.split(",") if k.strip()], API_KEY_ENV))
    return ApiKeys(tuple(keys))


def is_loopback(host: str) -> bool:
    """True for loopback addresses and for names that resolve only to loopback addresses (e.g. localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_startup_auth(keys: ApiKeys, host: str, allow_open_loopback: bool) -> None:
    """Refuse to run without a key, except when explicitly allowed on a loopback address."""
    if keys.enabled:
        return
    if not allow_open_loopback:
        raise ConfigError(
            f"no API key configured: set {API_KEY_ENV} or pass --api-key-file "
            "(or --allow-open-loopback to run without auth on a loopback address)"
        )
    if not is_loopback(host):
        raise ConfigError(f"--allow-open-loopback only works on a loopback host; {host!r} is not loopback")
