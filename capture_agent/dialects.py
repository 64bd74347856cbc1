"""SQL for the change-log capture method, one builder per dialect: pure functions, no connections.

For each captured table ``T`` the change log is a table ``T__obflow_log`` (Oracle: ``T$OBF_LOG``)
fed by row triggers. A row holds the change's sequence (its commit order for one row), the op, the
primary key and the before/after images as JSON, and the change time in ms since the epoch (UTC).

Column values pass through :func:`column_expression` both in the triggers and in snapshot reads, so a
row read by the snapshot and the same row written by a trigger render identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

Dialect = Literal["mysql", "oracle"]


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # lower case, as the catalog names it: int, decimal, varchar, timestamp, ...


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


def install_ddl(dialect: Dialect, table: TableInfo) -> list[str]:
    """Statements that create the change log and triggers for ``table``; safe to run again."""
    return _oracle_install(table) if dialect == "oracle" else _mysql_install(table)


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
            f"DROP TRIGGER IF EXISTS {q(table.schema)}.{q(f'{table.name}__obflow_{op}')}"
            for op in ("ins", "upd", "del")
        ),
        f"DROP TABLE IF EXISTS {q(table.schema)}.{q(log)}",
    ]


def _mysql_install(table: TableInfo) -> list[str]:
    q = partial(quote, "mysql")
    target = f"{q(table.schema)}.{q(table.name)}"
    log = f"{q(table.schema)}.{q(log_table_name('mysql', table.name))}"
    now_ms = "ROUND(UNIX_TIMESTAMP(NOW(6)) * 1000)"
    statements = [
        f"CREATE TABLE IF NOT EXISTS {log} ("
        "seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, op CHAR(1) NOT NULL, pk LONGTEXT NOT NULL, "
        "before_img LONGTEXT NULL, after_img LONGTEXT NULL, commit_ts_ms BIGINT NOT NULL)",
    ]
    for op, event, before, after, row in (
        ("ins", "INSERT", "NULL", json_image("mysql", table, "NEW."), "NEW."),
        ("upd", "UPDATE", json_image("mysql", table, "OLD."), json_image("mysql", table, "NEW."), "NEW."),
        ("del", "DELETE", json_image("mysql", table, "OLD."), "NULL", "OLD."),
    ):
        name = f"{q(table.schema)}.{q(f'{table.name}__obflow_{op}')}"
        code = {"ins": "c", "upd": "u", "del": "d"}[op]
        pk = json_image("mysql", table, row, table.primary_key)
        statements.append(f"DROP TRIGGER IF EXISTS {name}")
        statements.append(
            f"CREATE TRIGGER {name} AFTER {event} ON {target} FOR EACH ROW "
            f"INSERT INTO {log} (op, pk, before_img, after_img, commit_ts_ms) "
            f"VALUES ('{code}', {pk}, {before}, {after}, {now_ms})"
        )
    return statements


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
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE) FROM ALL_TAB_COLUMNS WHERE OWNER = %s AND TABLE_NAME = %s "
            "ORDER BY COLUMN_ID",
            "SELECT c.COLUMN_NAME FROM ALL_CONSTRAINTS k JOIN ALL_CONS_COLUMNS c ON c.OWNER = k.OWNER "
            "AND c.CONSTRAINT_NAME = k.CONSTRAINT_NAME WHERE k.CONSTRAINT_TYPE = 'P' AND k.OWNER = %s "
            "AND k.TABLE_NAME = %s ORDER BY c.POSITION",
        )
    return (
        "SELECT COLUMN_NAME, LOWER(DATA_TYPE) FROM information_schema.COLUMNS "
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
