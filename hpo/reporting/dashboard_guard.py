"""What the dashboard answers before optuna-dashboard's app sees a request: only the names it
is served under (against DNS rebinding), and no writes unless it was started to edit.

DNS rebinding: a web page on ``attacker.example`` re-points that name at 127.0.0.1 and its
script then talks to the local server as its own origin, with ``Host: attacker.example``.
Local servers that have no login answer only the names they are meant to be reached by, as
Jupyter does (``docs/decisions.md``, "The dashboard's requests").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["ANY_HOST", "LOOPBACK_NAMES", "DashboardGuard", "host_name"]

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_HOST: Final = "*"  # --allow-host '*': answer every name (behind a proxy that checks them)
_WILDCARD_ADDRESSES: Final = frozenset({"", "0.0.0.0", "::"})  # "any local address"
_READS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:[0-9]{1,5})?")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def host_name(header: str) -> str | None:
    """The name in a ``Host`` header (port and IPv6 brackets dropped, lower case, no final
    dot); ``None`` if it is not a plain name or address (``user@host``, spaces, ...)."""
    match = _HOST.fullmatch(header.strip())
    if match is None:
        return None
    return match.group(1).strip("[]").lower().rstrip(".")


class DashboardGuard:
    """WSGI middleware: 403 with one line for a ``Host`` that is not allowed, and for a write
    (POST, PUT, DELETE, ...) when ``read_only``; everything else goes to ``app``.

    Allowed: the loopback names, the address the server is bound to (unless that is a
    wildcard such as 0.0.0.0, which means "every local address": behind a published port,
    as in compose, requests from the host still arrive as localhost or 127.0.0.1), and
    ``allowed_hosts``.
    """

    def __init__(
        self, app: WSGIApp, bound_host: str, allowed_hosts: Iterable[str], *, read_only: bool
    ) -> None:
        self.app = app
        self.read_only = read_only
        names = {host_name(h) or h.lower() for h in allowed_hosts}
        bound = host_name(bound_host) or ""
        self.any_host = ANY_HOST in names
        self.allowed = LOOPBACK_NAMES | names | ({bound} - _WILDCARD_ADDRESSES)

    def allows(self, name: str | None) -> bool:
        """Whether a request for host ``name`` (from :func:`host_name`) is answered."""
        if self.any_host:
            return True
        if name is None:
            return False
        return name in self.allowed or _is_loopback_address(name)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        name = host_name(environ.get("HTTP_HOST", ""))
        if not self.allows(name):
            because = f"host {name!r} is not served here" if name else "no valid Host header"
            hint = f"--allow-host {name}" if name else "--allow-host NAME"
            message = f"{because}: open the dashboard at localhost, or start it with {hint}"
            return _refuse(start_response, message)
        if self.read_only and environ.get("REQUEST_METHOD", "GET").upper() not in _READS:
            message = "the dashboard is read-only: start it with --edit to change studies"
            return _refuse(start_response, message)
        return self.app(environ, start_response)


def _is_loopback_address(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _refuse(start_response: Callable[..., Any], message: str) -> list[bytes]:
    body = f"{message[:300]}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response("403 Forbidden", headers)
    return [body]
