"""SQL for the change-log capture method, one builder per dialect: pure functions, no connections.

For each captured table ``T`` the change log is a table ``T__obflow_log`` (Oracle: ``T$OBF_LOG``)
fed by row triggers. A row holds the change's sequence (its commit order for one row), the op, the
primary key and the before/after images as JSON, and the change time in ms since the epoch (UTC).

Column values pass through :func:`column_expression` both in the triggers and in snapshot reads, so a
row read by the snapshot and the same row written by a trigger render identically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

Dialect = Literal["mysql", "oracle"]


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # lower case, as the catalog names it: int, decimal, varchar, timestamp, ...
    column_type: str = ""  # the full type, lower case (decimal(12,2)): a change of it is a schema change too


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


DECIMAL_TYPES = {"decimal", "numeric", "number"}
TIMESTAMP_TYPES = {"timestamp"}
BINARY_TYPES = {"binary", "varbinary", "blob", "tinyblob", "mediumblob", "longblob", "raw", "bit"}


def quote(dialect: Dialect, name: str) -> str:
    return f'"{name}"' if dialect == "oracle" else f"`{name}`"


def log_table_name(dialect: Dialect, table: str) -> str:
    return f"{table}$OBF_LOG" if dialect == "oracle" else f"{table}__obflow_log"


def column_expression(dialect: Dialect, column: Column, prefix: str = "") -> str:
    """How a column's value is rendered in images: exact decimals as text, timestamps as epoch
    seconds (time-zone free), binary as base64, everything else as it is."""
    ref = prefix + quote(dialect, column.name)
    kind = column.data_type.lower()
    if dialect == "oracle":
        if kind.startswith("timestamp") or kind == "date":
            return (
                f"TO_CHAR({ref}, 'YYYY-MM-DD\"T\"HH24:MI:SS.FF6')"
                if kind.startswith("timestamp")
                else (f"TO_CHAR({ref}, 'YYYY-MM-DD\"T\"HH24:MI:SS')")
            )
        if kind in DECIMAL_TYPES:
            return f"TO_CHAR({ref})"
        if kind in BINARY_TYPES:
            return f"UTL_RAW.CAST_TO_VARCHAR2(UTL_ENCODE.BASE64_ENCODE({ref}))"
        return ref
    if kind in DECIMAL_TYPES:
        return f"CAST({ref} AS CHAR)"
    if kind in TIMESTAMP_TYPES:
        return f"UNIX_TIMESTAMP({ref})"
    if kind in BINARY_TYPES:
        return f"TO_BASE64({ref})"
    return ref


def json_image(dialect: Dialect, table: TableInfo, prefix: str, columns: tuple[str, ...] | None = None) -> str:
    names = columns or tuple(c.name for c in table.columns)
    joiner = " VALUE " if dialect == "oracle" else ", "
    parts = [f"'{name}'{joiner}{column_expression(dialect, table.column(name), prefix)}" for name in names]
    return f"JSON_OBJECT({', '.join(parts)})"


def schema_version(table: TableInfo) -> str:
    """A short name for the table's shape (column names and types, key): written by its triggers into
    every change-log row, so the agent knows which rows a trigger of an older shape wrote."""
    shape = (
        ";".join(f"{c.name}:{c.column_type or c.data_type}" for c in table.columns) + "|" + ",".join(table.primary_key)
    )
    return hashlib.sha1(shape.encode()).hexdigest()[:8]


def trigger_version(table: TableInfo, key_only: bool = False) -> str:
    """What a trigger writes under :data:`VERSION_KEY`: the table's shape, marked when it logs keys only."""
    return schema_version(table) + ("-key" if key_only else "")


VERSION_KEY = "~v"
"""The key under which a trigger writes :func:`schema_version` into the change-log row's key JSON."""

# Errors of a trigger whose table changed under it (MySQL, MariaDB): a column it names is gone (1054), or
# a value no longer converts as its old type did (1292, 1366). Caught inside the trigger, which then logs
# the key only. Never deadlocks or lock waits: their transaction must fail as it would without us.
STALE_TRIGGER_ERRORS = "1054, 1292, 1366"

TRIGGER_OPS = (("ins", "INSERT", "c", "NEW."), ("upd", "UPDATE", "u", "NEW."), ("del", "DELETE", "d", "OLD."))


def trigger_name(table: str, op: str, slot: int) -> str:
    """Triggers take two slots per op, so a new one can be created before the old one is dropped."""
    return f"{table}__obflow_{op}" + ("_b" if slot else "")


def install_ddl(
    dialect: Dialect,
    table: TableInfo,
    installed: Mapping[str, str] | None = None,
    replace_in_place: bool = False,
    key_only: bool = False,
) -> list[str]:
    """Statements that create the change log and triggers for ``table``; safe to run again.

    ``installed``: the triggers on the table now, name to body (MySQL family, from the catalog); one
    already of this shape is left as it is.
    ``replace_in_place`` (MariaDB): ``CREATE OR REPLACE TRIGGER``, atomic. Otherwise a trigger is replaced
    by creating the new one after the old (``FOLLOWS``), then dropping the old: no change is ever missed,
    and one made between the two statements is logged twice, once per shape; the agent drops the older
    copy (capture_agent.changelog). ``key_only``: triggers that log the op and the key but no images, so
    they name no other column (used around a DDL; the agent re-reads those rows).
    """
    if dialect == "oracle":
        return _oracle_install(table)
    q = partial(quote, "mysql")
    log = f"{q(table.schema)}.{q(log_table_name('mysql', table.name))}"
    statements = [
        f"CREATE TABLE IF NOT EXISTS {log} ("
        "seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, op CHAR(1) NOT NULL, pk LONGTEXT NOT NULL, "
        "before_img LONGTEXT NULL, after_img LONGTEXT NULL, commit_ts_ms BIGINT NOT NULL)",
    ]
    shape = f"'{VERSION_KEY}', '{trigger_version(table, key_only)}'"
    for op, event, code, row in TRIGGER_OPS:
        slots = [trigger_name(table.name, op, slot) for slot in (0, 1)]
        mine = [name for name in (installed or {}) if name in slots]
        if len(mine) == 1 and shape in (installed or {})[mine[0]]:
            continue
        body = partial(_mysql_trigger, table, log, event, code, row, key_only)
        if replace_in_place or not mine:
            name = mine[0] if mine else slots[0]
            create = "CREATE OR REPLACE TRIGGER" if mine else "CREATE TRIGGER"
            statements.append(f"{create} {q(table.schema)}.{q(name)} {body()}")
            statements += [f"DROP TRIGGER IF EXISTS {q(table.schema)}.{q(other)}" for other in mine[1:]]
            continue
        new = slots[0] if slots[1] in mine else slots[1]
        statements.append(f"CREATE TRIGGER {q(table.schema)}.{q(new)} {body(follows=mine[-1])}")
        statements += [f"DROP TRIGGER IF EXISTS {q(table.schema)}.{q(old)}" for old in mine if old != new]
    return statements


def _mysql_trigger(
    table: TableInfo, log: str, event: str, code: str, row: str, key_only: bool, follows: str | None = None
) -> str:
    target = f"{quote('mysql', table.schema)}.{quote('mysql', table.name)}"
    now_ms = "ROUND(UNIX_TIMESTAMP(NOW(6)) * 1000)"
    key = json_image("mysql", table, row, table.primary_key).removesuffix(")")
    key += f", '{VERSION_KEY}', '{trigger_version(table, key_only)}')"
    before = "NULL" if key_only or code == "c" else json_image("mysql", table, "OLD.")
    after = "NULL" if key_only or code == "d" else json_image("mysql", table, "NEW.")
    insert = f"INSERT INTO {log} (op, pk, before_img, after_img, commit_ts_ms) VALUES ('{code}', "
    order = f" FOLLOWS {quote('mysql', follows)}" if follows else ""
    # When the table changed under the trigger it logs the key only, or, when the key itself can no longer
    # be named, the op alone: the application's statement never fails because of us (where the engine
    # lets a trigger catch it: MariaDB; seekdb recompiles the trigger and fails the statement instead).
    return (
        f"AFTER {event} ON {target} FOR EACH ROW{order} BEGIN "
        f"DECLARE CONTINUE HANDLER FOR {STALE_TRIGGER_ERRORS} BEGIN "
        f"DECLARE CONTINUE HANDLER FOR {STALE_TRIGGER_ERRORS} {insert}'{{}}', NULL, NULL, {now_ms}); "
        f"{insert}{key}, NULL, NULL, {now_ms}); END; "
        f"{insert}{key}, {before}, {after}, {now_ms}); END"
    )


def uninstall_ddl(dialect: Dialect, table: TableInfo) -> list[str]:
    """Statements that remove what :func:`install_ddl` created (the captured table is untouched)."""
    q = partial(quote, dialect)
    log = log_table_name(dialect, table.name)
    if dialect == "oracle":
        return [
            f"BEGIN EXECUTE IMMEDIATE 'DROP TRIGGER {q(table.schema)}.{q(table.name + '$OBF_TRG')}'; "
            "EXCEPTION WHEN OTHERS THEN IF SQLCODE != -4080 THEN RAISE; END IF; END;",
            f"BEGIN EXECUTE IMMEDIATE 'DROP SEQUENCE {q(table.schema)}.{q(table.name + '$OBF_SEQ')}'; "
            "EXCEPTION WHEN OTHERS THEN IF SQLCODE != -2289 THEN RAISE; END IF; END;",
            f"BEGIN EXECUTE IMMEDIATE 'DROP TABLE {q(table.schema)}.{q(log)}'; "
            "EXCEPTION WHEN OTHERS THEN IF SQLCODE != -942 THEN RAISE; END IF; END;",
        ]
    return [
        *(
            f"DROP TRIGGER IF EXISTS {q(table.schema)}.{q(trigger_name(table.name, op, slot))}"
            for op, *_ in TRIGGER_OPS
            for slot in (0, 1)
        ),
        f"DROP TABLE IF EXISTS {q(table.schema)}.{q(log)}",
    ]


def installed_triggers_query() -> str:
    """(schema, table) -> (name, body) of the triggers on the table (MySQL family), oldest first."""
    return (
        "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = %s "
        "AND EVENT_OBJECT_TABLE = %s ORDER BY CREATED, TRIGGER_NAME"
    )


def row_by_key_query(dialect: Dialect, table: TableInfo) -> str:
    """The row with the key ``%s, ...`` (values as images render them), every column rendered for images."""
    q = partial(quote, dialect)
    columns = ", ".join(column_expression(dialect, c) for c in table.columns)
    where = " AND ".join(f"{q(k)} = {_key_parameter(dialect, table.column(k))}" for k in table.primary_key)
    return f"SELECT {columns} FROM {q(table.schema)}.{q(table.name)} WHERE {where}"


def _key_parameter(dialect: Dialect, column: Column) -> str:
    """A key value as images render it, turned back into the column's type (so the index is used)."""
    kind = column.data_type.lower()
    if dialect == "mysql" and kind in TIMESTAMP_TYPES:
        return "FROM_UNIXTIME(%s)"
    if dialect == "mysql" and kind in BINARY_TYPES:
        return "FROM_BASE64(%s)"
    return "%s"


def _oracle_install(table: TableInfo) -> list[str]:
    q = partial(quote, "oracle")
    schema = q(table.schema)
    target = f"{schema}.{q(table.name)}"
    log = f"{schema}.{q(log_table_name('oracle', table.name))}"
    seq = f"{schema}.{q(table.name + '$OBF_SEQ')}"
    trigger = f"{schema}.{q(table.name + '$OBF_TRG')}"
    now_ms = "ROUND((CAST(SYS_EXTRACT_UTC(SYSTIMESTAMP) AS DATE) - DATE '1970-01-01') * 86400000)"
    pk_new = json_image("oracle", table, ":NEW.", table.primary_key)
    pk_old = json_image("oracle", table, ":OLD.", table.primary_key)
    return [
        # ORDER keeps sequence values in call order across nodes; per-row order needs no more.
        f"BEGIN EXECUTE IMMEDIATE 'CREATE SEQUENCE {seq} START WITH 1 INCREMENT BY 1 CACHE 1000 ORDER'; "
        "EXCEPTION WHEN OTHERS THEN IF SQLCODE != -955 THEN RAISE; END IF; END;",
        f"BEGIN EXECUTE IMMEDIATE 'CREATE TABLE {log} (SEQ NUMBER(19) PRIMARY KEY, OP CHAR(1) NOT NULL, "
        "PK CLOB NOT NULL, BEFORE_IMG CLOB, AFTER_IMG CLOB, TXID VARCHAR2(64), COMMIT_TS_MS NUMBER(19) NOT NULL)'; "
        "EXCEPTION WHEN OTHERS THEN IF SQLCODE != -955 THEN RAISE; END IF; END;",
        f"CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {target} FOR EACH ROW\n"
        "BEGIN\n"
        "  IF INSERTING THEN\n"
        f"    INSERT INTO {log} (SEQ, OP, PK, BEFORE_IMG, AFTER_IMG, TXID, COMMIT_TS_MS) VALUES ({seq}.NEXTVAL, 'c', "
        f"{pk_new}, NULL, {json_image('oracle', table, ':NEW.')}, DBMS_TRANSACTION.LOCAL_TRANSACTION_ID, {now_ms});\n"
        "  ELSIF UPDATING THEN\n"
        f"    INSERT INTO {log} (SEQ, OP, PK, BEFORE_IMG, AFTER_IMG, TXID, COMMIT_TS_MS) VALUES ({seq}.NEXTVAL, 'u', "
        f"{pk_new}, {json_image('oracle', table, ':OLD.')}, {json_image('oracle', table, ':NEW.')}, "
        f"DBMS_TRANSACTION.LOCAL_TRANSACTION_ID, {now_ms});\n"
        "  ELSE\n"
        f"    INSERT INTO {log} (SEQ, OP, PK, BEFORE_IMG, AFTER_IMG, TXID, COMMIT_TS_MS) VALUES ({seq}.NEXTVAL, 'd', "
        f"{pk_old}, {json_image('oracle', table, ':OLD.')}, NULL, DBMS_TRANSACTION.LOCAL_TRANSACTION_ID, {now_ms});\n"
        "  END IF;\n"
        "END;",
    ]


def catalog_queries(dialect: Dialect) -> tuple[str, str]:
    """(columns query, primary-key query), each taking (schema, table) parameters."""
    if dialect == "oracle":
        return (
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(DATA_TYPE || '(' || DATA_LENGTH || ',' || DATA_PRECISION "
            "|| ',' || DATA_SCALE || ')') FROM ALL_TAB_COLUMNS WHERE OWNER = %s AND TABLE_NAME = %s "
            "ORDER BY COLUMN_ID",
            "SELECT c.COLUMN_NAME FROM ALL_CONSTRAINTS k JOIN ALL_CONS_COLUMNS c ON c.OWNER = k.OWNER "
            "AND c.CONSTRAINT_NAME = k.CONSTRAINT_NAME WHERE k.CONSTRAINT_TYPE = 'P' AND k.OWNER = %s "
            "AND k.TABLE_NAME = %s ORDER BY c.POSITION",
        )
    return (
        "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE) FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
        "AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
    )


def snapshot_query(dialect: Dialect, table: TableInfo, after_key: bool, limit: int) -> str:
    """One chunk of the snapshot in primary-key order, after a key when ``after_key``.

    Selects every column as rendered for images, then the raw primary-key columns (to resume from).
    """
    q = partial(quote, dialect)
    keys = ", ".join(q(k) for k in table.primary_key)
    columns = ", ".join(column_expression(dialect, c) for c in table.columns) + ", " + keys
    where = ""
    if after_key:
        where = f" WHERE ({keys}) > ({', '.join(['%s'] * len(table.primary_key))})"
    fetch = f" FETCH FIRST {limit} ROWS ONLY" if dialect == "oracle" else f" LIMIT {limit}"
    return f"SELECT {columns} FROM {q(table.schema)}.{q(table.name)}{where} ORDER BY {keys}{fetch}"


def log_query(dialect: Dialect, table: TableInfo, limit: int) -> str:
    """Change-log rows with ``seq > %s``, in sequence order."""
    q = partial(quote, dialect)
    log = f"{q(table.schema)}.{q(log_table_name(dialect, table.name))}"
    txid = "TXID" if dialect == "oracle" else "NULL"
    fetch = f" FETCH FIRST {limit} ROWS ONLY" if dialect == "oracle" else f" LIMIT {limit}"
    return (
        f"SELECT seq, op, pk, before_img, after_img, {txid}, commit_ts_ms FROM {log} WHERE seq > %s ORDER BY seq{fetch}"
    )


def seq_query(dialect: Dialect, table: TableInfo) -> str:
    """Just the sequences of change-log rows with ``%s <= seq <= %s``."""
    q = partial(quote, dialect)
    return f"SELECT seq FROM {q(table.schema)}.{q(log_table_name(dialect, table.name))} WHERE seq BETWEEN %s AND %s"


def gap_query(dialect: Dialect, table: TableInfo) -> str:
    """Change-log rows with ``%s <= seq <= %s`` (an open gap)."""
    q = partial(quote, dialect)
    log = f"{q(table.schema)}.{q(log_table_name(dialect, table.name))}"
    txid = "TXID" if dialect == "oracle" else "NULL"
    return (
        f"SELECT seq, op, pk, before_img, after_img, {txid}, commit_ts_ms FROM {log} "
        "WHERE seq BETWEEN %s AND %s ORDER BY seq"
    )


def purge_statement(dialect: Dialect, table: TableInfo) -> str:
    """Deletes change-log rows with ``seq <= %s`` (all of them already accepted by DataHub)."""
    q = partial(quote, dialect)
    return f"DELETE FROM {q(table.schema)}.{q(log_table_name(dialect, table.name))} WHERE seq <= %s"


def max_seq_query(dialect: Dialect, table: TableInfo) -> str:
    q = partial(quote, dialect)
    return f"SELECT COALESCE(MAX(seq), 0) FROM {q(table.schema)}.{q(log_table_name(dialect, table.name))}"


def snapshot_begin(dialect: Dialect) -> list[str]:
    """Start a transaction whose reads all see one consistent state (the snapshot's)."""
    if dialect == "oracle":
        return ["SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"]
    return [
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
    ]


def snapshot_end(dialect: Dialect) -> list[str]:
    if dialect == "oracle":
        return ["COMMIT"]
    return ["COMMIT", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"]
