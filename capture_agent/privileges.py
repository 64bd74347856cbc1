"""What a database's refusal means for the capture, and the statement that fixes it, per dialect.

The driver's own error is a tuple such as ``(1142, "CREATE command denied to user 'app'@'10.0.0.7' for
table 'orders__obflow_log'")``; a DBA needs the missing privilege named and the GRANT that gives it.
"""

from __future__ import annotations

import re
from typing import Literal

from obflow.config import SourceConfig
from obflow.tls import certificate_failure, untrusted_peer

Method = Literal["changelog", "binlog"]

# MySQL-protocol error codes (MariaDB, MySQL, seekdb, OceanBase MySQL mode)
ACCESS_DENIED = 1045  # user or password
DATABASE_DENIED = 1044  # no access to the database
UNKNOWN_DATABASE = 1049
COMMAND_DENIED = 1142  # CREATE, TRIGGER, DROP, INSERT ... on a table
TRIGGERS_NEED_SUPER = 1419  # creating a trigger with binary logging on
SUPER_NEEDED = 1227  # e.g. replication rights for the binlog capture
CANNOT_CONNECT = (2003, 2005, 2013)
TLS_UNSUPPORTED = 2026  # TLS asked for, not offered
_DENIED_COMMAND = re.compile(r"^(\w+) command denied", re.IGNORECASE)
_ORACLE_CODE = re.compile(r"ORA-(\d{5})")


def needed_grants(source: SourceConfig, method: Method) -> list[str]:
    """The statements that give ``source.user`` what ``method`` needs (install, capture, uninstall)."""
    user = source.user if source.mode == "oracle" else f"'{source.user}'@'%'"
    if source.mode == "oracle":
        return [f"GRANT CREATE SESSION, CREATE TABLE, CREATE SEQUENCE, CREATE TRIGGER TO {user}"]
    grants = [f"GRANT SELECT, INSERT, DELETE, CREATE, DROP, TRIGGER ON `{source.database}`.* TO {user}"]
    if method == "binlog":
        grants = [f"GRANT SELECT ON `{source.database}`.* TO {user}",
                  f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO {user}"]  # fmt: skip
    return grants


def explain(exc: BaseException, source: SourceConfig, method: Method = "changelog") -> str | None:
    """A DBA's reading of a driver error (None when it is not about rights or reaching the database), with the
    error's notes (what a failed install left behind, say)."""
    reading = _reading(exc, source, method)
    return None if reading is None else _with_notes(reading, exc)


def _reading(exc: BaseException, source: SourceConfig, method: Method) -> str | None:
    code, message = _code_and_message(exc)
    where = f"{source.host}:{source.port}"
    grants = "; ".join(needed_grants(source, method))
    untrusted = certificate_failure(exc)
    if untrusted is not None:
        return untrusted_peer(f"the database at {where}", source.host, untrusted, source.ca_file, "source.ca_file")
    if code == TLS_UNSUPPORTED:
        return (f"the database at {where} does not offer TLS, which source.tls asks for ({code}): enable TLS on "
                "the server (MySQL and MariaDB: ssl_cert and ssl_key), or set source.tls: false")  # fmt: skip
    if code == ACCESS_DENIED:
        return (f"the database at {where} refused user {source.user!r} ({code}): check source.user and "
                "source.password (and source.tenant for OceanBase)")  # fmt: skip
    if code == UNKNOWN_DATABASE:
        return (f"database {source.database!r} does not exist at {where} ({code}): create it, or set "
                "source.database to the database that holds the tables")  # fmt: skip
    if code == DATABASE_DENIED:
        return f"user {source.user!r} may not use database {source.database!r} ({code}); as a DBA: {grants}"
    if code == COMMAND_DENIED:
        denied = _DENIED_COMMAND.match(message)
        privilege = denied.group(1).upper() if denied else "a"
        return (f"user {source.user!r} lacks the {privilege} privilege the capture needs on {source.database!r} "
                f"({code}: {message}); as a DBA: {grants}")  # fmt: skip
    if code == TRIGGERS_NEED_SUPER:
        return (f"user {source.user!r} may not create the capture triggers while the database writes a binary log "
                f"({code}): as a DBA, `SET GLOBAL log_bin_trust_function_creators = 1` (or grant SUPER), and the "
                f"capture needs: {grants}")  # fmt: skip
    if code == SUPER_NEEDED:
        return f"user {source.user!r} lacks a privilege the capture needs ({code}: {message}); as a DBA: {grants}"
    if code in CANNOT_CONNECT or isinstance(exc, ConnectionError | TimeoutError):
        return (f"cannot reach the database at {where} ({message}): check source.host and source.port, and that "
                "the database accepts connections from here")  # fmt: skip
    oracle = _ORACLE_CODE.search(message)
    if oracle and oracle.group(1) in {"01031", "01045", "01950"}:
        return f"user {source.user!r} lacks a privilege the capture needs (ORA-{oracle.group(1)}); as a DBA: {grants}"
    if oracle and oracle.group(1) == "01017":
        return (
            f"the database at {where} refused user {source.user!r} (ORA-01017): check source.user and source.password"
        )
    return None


def describe(exc: BaseException, source: SourceConfig, method: Method = "changelog") -> str:
    """:func:`explain`'s reading, else the database's code and message (not the driver's raw tuple)."""
    explained = explain(exc, source, method)
    if explained is not None:
        return explained
    code, message = _code_and_message(exc)
    return _with_notes(
        f"the database at {source.host}:{source.port} answered {code}: {message}" if code else message, exc
    )


def _with_notes(text: str, exc: BaseException) -> str:
    return "; ".join([text, *getattr(exc, "__notes__", ())])


def _code_and_message(exc: BaseException) -> tuple[int | None, str]:
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], str(args[1])
    return None, str(exc)
