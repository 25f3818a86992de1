"""What a storage URL means (SQLite for one machine, PostgreSQL for many): parsed once into a
:class:`StorageTarget` at the entry point; messages show only its masked form.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote_plus

__all__ = [
    "ARTIFACT_DIR_ENV",
    "DEFAULT_STORAGE_URL",
    "STORAGE_DEFAULT_HELP",
    "STORAGE_ENV",
    "StorageError",
    "StorageTarget",
    "hide_secrets",
    "mask_url",
    "resolve_storage_url",
]

STORAGE_ENV: Final = "HPO_STORAGE"
ARTIFACT_DIR_ENV: Final = "HPO_ARTIFACT_DIR"
DEFAULT_STORAGE_URL: Final = "sqlite:///hpo.db"
STORAGE_DEFAULT_HELP: Final = f"${STORAGE_ENV}, else {DEFAULT_STORAGE_URL}"

SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
_POSTGRES_ALIASES = frozenset({"postgresql", "postgres"})
_EXPECTED = (
    "expected sqlite:///path/to/study.db (one machine) or "
    "postgresql+psycopg://user:password@host:5432/dbname (many machines)"
)


class StorageError(Exception):
    """The storage URL is unusable or the database cannot be reached (message is one line)."""


def resolve_storage_url(cli_value: str | None) -> str:
    """Command line beats environment beats the SQLite default in the working directory."""
    return cli_value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE_URL


def mask_url(url: str) -> str:
    """``url`` with every secret replaced by ``***``: the one masking of storage URLs, for logs,
    errors, reports and hints. Malformed URLs included (``docs/decisions.md``, "Secrets")."""
    return _mask(url)[0]


def hide_secrets(text: str, url: str) -> str:
    """``text`` (a driver's message, say) with every secret of ``url`` replaced by ``***``."""
    for piece in sorted(set(_mask(url)[1]), key=len, reverse=True):
        for form in {piece, unquote_plus(piece)}:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])", "***", text)
    return text


# libpq and pysqlite options whose values are shown; every other option's is hidden (an
# unknown or misspelt name may hold a password, and libpq takes ``password`` and
# ``sslpassword`` in the query string).
_PUBLIC_OPTIONS: Final = frozenset(
    {
        "application_name", "channel_binding", "client_encoding", "connect_timeout",
        "fallback_application_name", "gssencmode", "gsslib", "host", "hostaddr", "keepalives",
        "keepalives_count", "keepalives_idle", "keepalives_interval", "krbsrvname",
        "load_balance_hosts", "max_protocol_version", "min_protocol_version", "options", "port",
        "replication", "require_auth", "requirepeer", "service", "ssl_max_protocol_version",
        "ssl_min_protocol_version", "sslcert", "sslcompression", "sslcrl", "sslcrldir", "sslkey",
        "sslmode", "sslnegotiation", "sslrootcert", "sslsni", "target_session_attrs",
        "tcp_user_timeout", "user", "check_same_thread", "isolation_level", "mode", "timeout",
        "uri",
    }
)  # fmt: skip
_SECRET_OPTIONS: Final = frozenset({"password", "sslpassword"})
_SCHEME = re.compile(r"[A-Za-z][\w+.-]*://")
_USERINFO = re.compile(r"([^:/@]*)(?::([^@]*))?@([^@]*)")  # SQLAlchemy's split, one "@"


def _mask(url: str) -> tuple[str, list[str]]:
    """The masked ``url`` and the pieces it hid. The URL is split as SQLAlchemy splits it;
    where that leaves an ``@`` outside the user-info (a password holding ``@``, ``/`` or
    ``?``), everything before the last ``@`` is hidden."""
    scheme = _SCHEME.match(url)
    prefix = scheme.group() if scheme else ""
    rest = url[len(prefix) :]
    userinfo = _USERINFO.fullmatch(rest)
    if userinfo:
        user, password, rest = userinfo.groups()
        head = f"{user}:***@" if password else f"{user}{'' if password is None else ':'}@"
        hidden = [password] if password else []
    elif "@" in rest and not (prefix and "@" not in rest.partition("?")[0]):
        before, _, rest = rest.rpartition("@")
        head, hidden = "***@", [before]
    else:  # no user-info; an "@" in the query of a URL without one is part of a value
        head, hidden = "", []
    location, hidden_there = _mask_location(rest)
    return prefix + head + location, hidden + hidden_there


def _mask_location(location: str) -> tuple[str, list[str]]:
    """Host, port, path and query: a port that is not a number and every option whose name is
    not a known public one are hidden."""
    end = min((i for i in (location.find("/"), location.find("?")) if i >= 0), default=None)
    hostport, tail = location[:end], location[end:] if end is not None else ""
    hidden: list[str] = []
    host = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(.*))?", hostport, flags=re.S)
    if host and host.group(2) and not host.group(2).isdigit():
        hidden.append(host.group(2))
        hostport = f"{host.group(1)}:***"
    path, question, query = tail.partition("?")
    options = []
    for option in query.split("&") if question else []:
        key, equals, value = option.partition("=")
        name = unquote_plus(key).strip()
        if equals and name in _PUBLIC_OPTIONS:
            options.append(option)
        elif equals and name in _SECRET_OPTIONS:
            options.append(f"{key}=***")
            hidden.append(value)
        else:  # the name too: a password holding "&" leaves pieces of itself as names
            options.append("***" if option else option)
            hidden += [key, value]
    return hostport + path + question + "&".join(options), [h for h in hidden if h]


@dataclass(frozen=True)
class StorageTarget:
    """A validated storage URL, parsed once (picklable: ``--workers K`` hands it on)."""

    url: str  # password included: never print it
    masked: str  # for every message
    sqlite_path: Path | None = None  # None: a server, or memory
    in_memory: bool = False  # an in-memory SQLite database (one process, nothing kept)

    @classmethod
    def parse(cls, url: str) -> StorageTarget:
        """Validate ``url`` (a bare ``postgresql://`` means psycopg 3); ``StorageError`` (one
        line, masked) if it is empty, unparseable, unsupported or malformed."""
        import sqlalchemy

        if not url or not url.strip():
            raise StorageError(f"empty storage URL: {_EXPECTED}")
        if "{" in url or "}" in url:
            raise StorageError(
                "the storage URL holds braces (Optuna's {SCHEMA_VERSION} template is not "
                "supported): name the database file or database plainly"
            )
        try:
            parsed = sqlalchemy.engine.make_url(url.strip())
        except (sqlalchemy.exc.ArgumentError, ValueError) as e:
            raise StorageError(f"invalid storage URL {mask_url(url)!r}: {_EXPECTED}") from e
        if parsed.drivername in SQLITE_DRIVERS:
            if parsed.host or parsed.username or parsed.password or parsed.port:
                raise StorageError(
                    f"invalid SQLite URL {mask_url(url)!r}: use three slashes for a relative "
                    "path (sqlite:///study.db) or four for an absolute one (sqlite:////abs/x.db)"
                )
            if parsed.query.get("uri") or (parsed.database or "").startswith("file:"):
                raise StorageError("SQLite URI file names are not supported: sqlite:///path/db")
            in_memory = parsed.database in (None, "", ":memory:")
            path = None if in_memory else Path(str(parsed.database))
            plain = parsed.render_as_string(hide_password=False)
            return cls(plain, mask_url(plain), path, in_memory)
        if parsed.drivername in _POSTGRES_ALIASES:
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_backend_name() != "postgresql":
            raise StorageError(f"unsupported storage URL {mask_url(url)!r}: {_EXPECTED}")
        if not parsed.database:
            raise StorageError(f"PostgreSQL URL {mask_url(url)!r} names no database: {_EXPECTED}")
        if "@" in (parsed.host or "") + parsed.database:
            raise StorageError(
                f"the storage URL {mask_url(url)!r} holds an '@' after its user name and "
                "password: percent-encode '@', '/' and ':' in them (%40, %2F, %3A)"
            )
        plain = parsed.render_as_string(hide_password=False)
        return cls(plain, mask_url(plain))

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def artifact_dir(self) -> Path:
        """Where trial artifacts (checkpoints) go: ``HPO_ARTIFACT_DIR``, else next to a SQLite
        file (``<stem>-artifacts``), else ``hpo-artifacts`` in the working directory."""
        override = os.environ.get(ARTIFACT_DIR_ENV)
        if override:
            return Path(override)
        if self.sqlite_path is not None:
            return self.sqlite_path.parent / f"{self.sqlite_path.stem}-artifacts"
        return Path("hpo-artifacts")

    def server_connect_args(self, connect_timeout: int) -> dict[str, Any]:
        """The driver options of every connection to a database server: a connection timeout,
        and for psycopg 3 no server-side prepared statements. psycopg 3 prepares a query it has
        run 5 times on a connection; behind PgBouncer in transaction pooling (which does not
        announce itself) each transaction may get another server connection, where that
        statement is missing or another client's of the same name exists, and the query fails
        (``docs/decisions.md``, "PgBouncer")."""
        args: dict[str, Any] = {"connect_timeout": connect_timeout}
        if _driver(self.url) == "psycopg":
            args["prepare_threshold"] = None
        return args

    def hide(self, text: str) -> str:
        """``text`` with this URL's secrets replaced by ``***`` (a driver's error message)."""
        return hide_secrets(text, self.url)

    def __repr__(self) -> str:  # the dataclass repr would print the password
        return f"StorageTarget({self.masked!r})"


def _driver(url: str) -> str:
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).get_driver_name()
