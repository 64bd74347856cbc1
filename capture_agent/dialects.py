"""SQL for the change-log capture method, one builder per dialect: pure functions, no connections.

For each captured table ``T`` the change log is a table ``T__obflow_log`` (Oracle: ``T$OBF_LOG``)
fed by row triggers. A row holds the change's sequence (its commit order for one row), the op, the
primary key and the before/after images as JSON, and the change time in ms since the epoch (UTC).

Column values pass through :func:`column_expression` both in the triggers and in snapshot reads, so a
row read by the snapshot and the same row written by a trigger render identically.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal

from obflow.events import TableSchema

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
    skipped: tuple[str, ...] = ()
    """Columns the capture cannot name (Oracle LONG): not in the images."""

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


def column_expression(dialect: Dialect, column: Column, prefix: str = "", schema: str = "") -> str:
    """How a column's value is rendered in images: exact decimals as text, timestamps as epoch
    seconds (time-zone free), binary as base64, everything else as it is. ``schema``: the table's
    (Oracle: where the base64 function lives)."""
    ref = prefix + quote(dialect, column.name)
    if dialect == "oracle":
        return _oracle_expression(column, ref, schema)
    kind = column.data_type.lower()
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
    parts = [
        f"'{name}'{joiner}{column_expression(dialect, table.column(name), prefix, table.schema)}" for name in names
    ]
    # Oracle: VARCHAR2(4000) unless told otherwise, too short for a wide row
    returning = " RETURNING CLOB" if dialect == "oracle" else ""
    return f"JSON_OBJECT({', '.join(parts)}{returning})"


def schema_version(table: TableInfo) -> str:
    """A short name for the table's shape (column names and types, key): written by its triggers into
    every change-log row, so the agent knows which rows a trigger of an older shape wrote."""
    shape = (
        ";".join(f"{c.name}:{c.column_type or c.data_type}" for c in table.columns) + "|" + ",".join(table.primary_key)
    )
    return hashlib.sha1(shape.encode()).hexdigest()[:8]


def sql_type(dialect: Dialect, column: Column) -> str:
    """The column's type as SQL declares it, the way ``source.tables[].columns`` takes it: MySQL's
    COLUMN_TYPE; in Oracle mode rebuilt from the catalog's length, precision and scale."""
    full = column.column_type or column.data_type
    catalog = re.fullmatch(r"(.+)\((\d*),(\d*),(\d*)\)", full) if dialect == "oracle" else None
    if catalog is None:
        return full
    name, length, precision, scale = catalog.groups()
    kind = base_type(name)
    if kind == "number":
        return f"{name}({precision},{scale or 0})" if precision else name
    if kind == "float":
        return f"{name}({precision})" if precision else name
    if kind in {"varchar2", "nvarchar2", "char", "nchar", "raw"} and length:
        return f"{name}({length})"
    return name


def table_schema(dialect: Dialect, table: TableInfo) -> TableSchema:
    """What every event of ``table`` in this shape carries (obflow.events.TableSchema)."""
    columns = tuple((c.name, sql_type(dialect, c)) for c in table.columns)
    return TableSchema(version=schema_version(table), columns=columns)


def trigger_version(table: TableInfo, key_only: bool = False) -> str:
    """What a trigger writes under :data:`VERSION_KEY`: the table's shape, marked when it logs keys only."""
    return schema_version(table) + ("-key" if key_only else "")


VERSION_KEY = "~v"
"""The key under which a trigger writes :func:`schema_version` into the change-log row's key JSON."""


def version_marker(dialect: Dialect, version: str) -> str:
    """The text a trigger of ``version`` has in its body: how the one installed is told current or not."""
    return f"'{VERSION_KEY}' VALUE '{version}'" if dialect == "oracle" else f"'{VERSION_KEY}', '{version}'"


def is_capture_trigger(dialect: Dialect, table: str, trigger: str) -> bool:
    """Whether ``trigger`` (on ``table``) is one of obflow's change-log triggers."""
    return trigger == oracle_trigger_name(table) if dialect == "oracle" else trigger.startswith(f"{table}__obflow_")


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
    """Statements that create the change log and triggers for ``table``; safe to run again
    (:func:`log_ddl`, then :func:`trigger_ddl`)."""
    return log_ddl(dialect, table) + trigger_ddl(dialect, table, installed, replace_in_place, key_only)


def log_ddl(dialect: Dialect, table: TableInfo) -> list[str]:
    """The change log (and in Oracle mode its sequence), created when missing."""
    if dialect == "oracle":
        return _oracle_log(table)
    log = f"{quote('mysql', table.schema)}.{quote('mysql', log_table_name('mysql', table.name))}"
    return [
        f"CREATE TABLE IF NOT EXISTS {log} ("
        "seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, op CHAR(1) NOT NULL, pk LONGTEXT NOT NULL, "
        "before_img LONGTEXT NULL, after_img LONGTEXT NULL, commit_ts_ms BIGINT NOT NULL)",
    ]


def trigger_ddl(
    dialect: Dialect,
    table: TableInfo,
    installed: Mapping[str, str] | None = None,
    replace_in_place: bool = False,
    key_only: bool = False,
) -> list[str]:
    """Statements that give ``table`` the change-log triggers of its shape now.

    ``installed``: the triggers on the table now, name to body (from :func:`installed_triggers_query`); one
    already of this shape is left as it is.
    ``replace_in_place`` (MariaDB): ``CREATE OR REPLACE TRIGGER``, atomic (always so in Oracle mode).
    Otherwise a trigger is replaced by creating the new one after the old (``FOLLOWS``), then dropping the
    old: no change is ever missed, and one made between the two statements is logged twice, once per shape;
    the agent drops the older copy (capture_agent.changelog). ``key_only``: triggers that log the op and the
    key but no images, so they name no other column (used around a DDL; the agent re-reads those rows).
    """
    if dialect == "oracle":
        return _oracle_triggers(table, installed, key_only)
    q = partial(quote, "mysql")
    log = f"{q(table.schema)}.{q(log_table_name('mysql', table.name))}"
    statements: list[str] = []
    shape = version_marker("mysql", trigger_version(table, key_only))
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
    key += f", {version_marker('mysql', trigger_version(table, key_only))})"
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
            f"BEGIN EXECUTE IMMEDIATE 'DROP TRIGGER {q(table.schema)}.{q(oracle_trigger_name(table.name))}'; "
            "EXCEPTION WHEN OTHERS THEN IF SQLCODE != -4080 THEN RAISE; END IF; END;",
            f"BEGIN EXECUTE IMMEDIATE 'DROP SEQUENCE {q(table.schema)}.{q(oracle_sequence_name(table.name))}'; "
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


def installed_triggers_query(dialect: Dialect) -> str:
    """(schema, table) -> (name, body) of the triggers on the table, oldest first (MySQL family)."""
    if dialect == "oracle":
        return (
            "SELECT TRIGGER_NAME, TRIGGER_BODY FROM ALL_TRIGGERS WHERE TABLE_OWNER = %s AND TABLE_NAME = %s "
            "ORDER BY TRIGGER_NAME"
        )
    return (
        "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = %s "
        "AND EVENT_OBJECT_TABLE = %s ORDER BY CREATED, TRIGGER_NAME"
    )


def log_table_query(dialect: Dialect) -> str:
    """(schema, log table name) -> one row when that change log exists."""
    if dialect == "oracle":
        return "SELECT TABLE_NAME FROM ALL_TABLES WHERE OWNER = %s AND TABLE_NAME = %s"
    return "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"


def row_by_key_query(dialect: Dialect, table: TableInfo) -> str:
    """The row with the key ``%s, ...`` (values as images render them), every column rendered for images."""
    q = partial(quote, dialect)
    columns = ", ".join(column_expression(dialect, c, schema=table.schema) for c in table.columns)
    where = " AND ".join(f"{q(k)} = {_key_parameter(dialect, table.column(k))}" for k in table.primary_key)
    return f"SELECT {columns} FROM {q(table.schema)}.{q(table.name)} WHERE {where}"


def _key_parameter(dialect: Dialect, column: Column) -> str:
    """A key value as images render it, turned back into the column's type (so the index is used)."""
    kind = column.data_type.lower()
    if dialect == "oracle":
        base = base_type(kind)
        if base == "date":
            return f"TO_DATE(%s, '{_ORACLE_DATETIME}')"
        if base == "timestamp":
            fraction = ".FF" if _size_after(kind, "timestamp", 6) else ""
            return f"TO_TIMESTAMP(%s, '{_ORACLE_DATETIME}{fraction}')"
        return "UTL_ENCODE.BASE64_DECODE(UTL_RAW.CAST_TO_RAW(%s))" if base == "raw" else "%s"
    if dialect == "mysql" and kind in TIMESTAMP_TYPES:
        return "FROM_UNIXTIME(%s)"
    if dialect == "mysql" and kind in BINARY_TYPES:
        return "FROM_BASE64(%s)"
    return "%s"


# ---- Oracle mode ------------------------------------------------------------------------------
# The application's own sessions fire the triggers, each with its own NLS settings: nothing rendered may
# depend on them. Numbers get explicit separators, datetimes numeric format elements only, instants UTC.

ORACLE_NUMBER_TYPES = {"number", "float", "decimal", "numeric", "integer", "int", "smallint"}
ORACLE_BINARY_TYPES = {"blob", "raw"}
ORACLE_UNCAPTURABLE_TYPES = {"long", "long raw"}
"""A row trigger cannot name a LONG column (it would not compile, and every DML on the table would then fail
with ORA-04098): such columns are left out of the images (:attr:`TableInfo.skipped`)."""
ORACLE_BASE64_FUNCTION = "OBFLOW$BASE64"
ORACLE_DDL_GUARD = "OBFLOW$DDL_GUARD"
ORACLE_DDL_CLIENT = "obflow capture ddl"
"""The client identifier `obflow capture ddl` sets: the DDL guard lets that session change captured columns."""

_NUMERIC_NLS = "'NLS_NUMERIC_CHARACTERS=''.,'''"
_ORACLE_DATETIME = 'YYYY-MM-DD"T"HH24:MI:SS'


def base_type(data_type: str) -> str:
    """The type without its sizes: ``timestamp(6) with time zone`` -> ``timestamp with time zone``."""
    return " ".join(re.sub(r"\([^)]*\)", " ", data_type.lower()).split())


def _size_after(data_type: str, word: str, default: int) -> int:
    match = re.search(word + r"\s*\(\s*(\d+)", data_type.lower())
    return int(match.group(1)) if match else default


def _oracle_number(expression: str) -> str:
    """Exact decimal text in any session: ``.`` as the separator, no group separator, ``0.5`` not ``.5``
    (scientific notation only beyond 64 characters)."""
    text = f"TO_CHAR({expression}, 'TM9', {_NUMERIC_NLS})"
    return f"REGEXP_REPLACE({text}, '^(-?)\\.', '\\10.')"


def _oracle_expression(column: Column, ref: str, schema: str) -> str:
    kind = base_type(column.data_type)
    if kind in ORACLE_NUMBER_TYPES:
        return _oracle_number(ref)
    if kind == "date":
        return f"TO_CHAR({ref}, '{_ORACLE_DATETIME}')"
    if kind.startswith("timestamp"):
        digits = _size_after(column.data_type, "timestamp", 6)
        mask = _ORACLE_DATETIME + (f".FF{digits}" if digits else "")
        if kind == "timestamp with time zone":
            return f"TO_CHAR(SYS_EXTRACT_UTC({ref}), '{mask}\"Z\"')"
        if kind == "timestamp with local time zone":
            return f"TO_CHAR(SYS_EXTRACT_UTC(CAST({ref} AS TIMESTAMP WITH TIME ZONE)), '{mask}\"Z\"')"
        return f"TO_CHAR({ref}, '{mask}')"
    if kind.startswith("interval"):
        return _oracle_interval(kind, ref)
    if kind in ORACLE_BINARY_TYPES:
        function = quote("oracle", ORACLE_BASE64_FUNCTION)
        if schema:
            function = f"{quote('oracle', schema)}.{function}"
        return f"{function}({ref})" if kind == "blob" else f"{function}(TO_BLOB({ref}))"
    if kind == "nclob":
        return f"TO_CLOB({ref})"
    if kind in ("rowid", "urowid"):
        return f"ROWIDTOCHAR({ref})"
    return ref


def _oracle_interval(kind: str, ref: str) -> str:
    """ISO 8601 durations (``P1Y2M``, ``-P3DT4H5M6.5S``)."""

    def part(unit: str) -> str:
        return _oracle_number(f"ABS(EXTRACT({unit} FROM {ref}))")

    if kind == "interval year to month":
        sign = f"CASE WHEN {ref} < INTERVAL '0' MONTH THEN '-' END"
        duration = f"'P' || {part('YEAR')} || 'Y' || {part('MONTH')} || 'M'"
    else:
        sign = f"CASE WHEN {ref} < INTERVAL '0' SECOND THEN '-' END"
        duration = (
            f"'P' || {part('DAY')} || 'DT' || {part('HOUR')} || 'H' || {part('MINUTE')} || 'M' || "
            f"{part('SECOND')} || 'S'"
        )
    return f"CASE WHEN {ref} IS NULL THEN NULL ELSE {sign} || {duration} END"


def oracle_capturable(columns: tuple[Column, ...]) -> tuple[tuple[Column, ...], tuple[str, ...]]:
    """(the columns a trigger can name, the names of those it cannot)."""
    kept = tuple(c for c in columns if base_type(c.data_type) not in ORACLE_UNCAPTURABLE_TYPES)
    return kept, tuple(c.name for c in columns if c not in kept)


def oracle_sequence_name(table: str) -> str:
    return f"{table}$OBF_SEQ"


def oracle_trigger_name(table: str) -> str:
    return f"{table}$OBF_TRG"


def _oracle_log(table: TableInfo) -> list[str]:
    q = partial(quote, "oracle")
    schema = q(table.schema)
    log = f"{schema}.{q(log_table_name('oracle', table.name))}"
    return [
        # ORDER keeps sequence values in call order across nodes; per-row order needs no more.
        f"BEGIN EXECUTE IMMEDIATE 'CREATE SEQUENCE {schema}.{q(oracle_sequence_name(table.name))} START WITH 1 "
        "INCREMENT BY 1 CACHE 1000 ORDER'; EXCEPTION WHEN OTHERS THEN IF SQLCODE != -955 THEN RAISE; END IF; END;",
        f"BEGIN EXECUTE IMMEDIATE 'CREATE TABLE {log} (SEQ NUMBER(19) PRIMARY KEY, OP CHAR(1) NOT NULL, "
        "PK CLOB NOT NULL, BEFORE_IMG CLOB, AFTER_IMG CLOB, TXID VARCHAR2(64), COMMIT_TS_MS NUMBER(19) NOT NULL)'; "
        "EXCEPTION WHEN OTHERS THEN IF SQLCODE != -955 THEN RAISE; END IF; END;",
    ]


def _oracle_triggers(table: TableInfo, installed: Mapping[str, str] | None, key_only: bool) -> list[str]:
    statements = []
    if any(base_type(c.data_type) in ORACLE_BINARY_TYPES for c in table.columns):
        statements.append(_oracle_base64_function(table.schema))
    current = version_marker("oracle", trigger_version(table, key_only))
    if current not in (installed or {}).get(oracle_trigger_name(table.name), ""):
        statements.append(oracle_trigger(table, key_only))
    return statements


def oracle_trigger(table: TableInfo, key_only: bool = False) -> str:
    """The row trigger. ``CREATE OR REPLACE`` is atomic: a replacement never misses or doubles a change."""
    q = partial(quote, "oracle")
    schema = q(table.schema)
    log = f"{schema}.{q(log_table_name('oracle', table.name))}"
    seq = f"{schema}.{q(oracle_sequence_name(table.name))}"
    # now in UTC to the millisecond, NLS-free: whole seconds since the epoch from DATE arithmetic, plus the fraction
    utc = "SYS_EXTRACT_UTC(SYSTIMESTAMP)"
    now_ms = (
        f"ROUND((CAST({utc} AS DATE) - DATE '1970-01-01') * 86400) * 1000 "
        f"+ TRUNC(MOD(EXTRACT(SECOND FROM {utc}), 1) * 1000)"
    )
    version = version_marker("oracle", trigger_version(table, key_only))

    def key(row: str) -> str:
        image = json_image("oracle", table, row, table.primary_key)
        return image.replace(" RETURNING CLOB)", f", {version} RETURNING CLOB)")

    def image(row: str) -> str:
        return "NULL" if key_only else json_image("oracle", table, row)

    def insert(op: str, pk: str, before: str, after: str) -> str:
        return (
            f"    INSERT INTO {log} (SEQ, OP, PK, BEFORE_IMG, AFTER_IMG, TXID, COMMIT_TS_MS) VALUES ({seq}.NEXTVAL, "
            f"'{op}', {pk}, {before}, {after}, DBMS_TRANSACTION.LOCAL_TRANSACTION_ID, {now_ms});\n"
        )

    return (
        f"CREATE OR REPLACE TRIGGER {schema}.{q(oracle_trigger_name(table.name))} AFTER INSERT OR UPDATE OR DELETE "
        f"ON {schema}.{q(table.name)} FOR EACH ROW\n"
        "BEGIN\n"
        "  IF INSERTING THEN\n"
        + insert("c", key(":NEW."), "NULL", image(":NEW."))
        + "  ELSIF UPDATING THEN\n"
        + insert("u", key(":NEW."), image(":OLD."), image(":NEW."))
        + "  ELSE\n"
        + insert("d", key(":OLD."), image(":OLD."), "NULL")
        + "  END IF;\n"
        "END;"
    )


def _oracle_base64_function(schema: str) -> str:
    """Base64 of a BLOB of any size, without line breaks (UTL_ENCODE takes RAW up to 32 KB and wraps at 64
    characters): in chunks of 12,288 bytes, a multiple of 3, so the chunks' encodings join up. Created once
    per schema and never replaced (replacing it would recompile every trigger that calls it)."""
    name = f"{quote('oracle', schema)}.{quote('oracle', ORACLE_BASE64_FUNCTION)}"
    body = (
        f"CREATE FUNCTION {name} (p_data IN BLOB) RETURN CLOB DETERMINISTIC IS "
        "v_out CLOB; v_chunk CONSTANT PLS_INTEGER := 12288; v_at PLS_INTEGER := 1; "
        "BEGIN "
        "IF p_data IS NULL THEN RETURN NULL; END IF; "
        "DBMS_LOB.CREATETEMPORARY(v_out, TRUE, DBMS_LOB.CALL); "
        "WHILE v_at <= DBMS_LOB.GETLENGTH(p_data) LOOP "
        "DBMS_LOB.APPEND(v_out, TO_CLOB(REPLACE(REPLACE(UTL_RAW.CAST_TO_VARCHAR2(UTL_ENCODE.BASE64_ENCODE("
        "DBMS_LOB.SUBSTR(p_data, v_chunk, v_at))), CHR(13)), CHR(10)))); "
        "v_at := v_at + v_chunk; "
        "END LOOP; "
        "RETURN v_out; "
        "END;"
    )
    return f"BEGIN EXECUTE IMMEDIATE '{body}'; EXCEPTION WHEN OTHERS THEN IF SQLCODE != -955 THEN RAISE; END IF; END;"


def oracle_ddl_guard(schema: str) -> str:
    """A schema trigger that rejects an ALTER TABLE dropping, renaming or retyping a column of a captured table
    (one with an obflow trigger), which would leave its trigger invalid and fail every write with ORA-04098,
    and names the command that applies it safely. It fires for DDL run as the schema's owner (ON SCHEMA);
    ADD COLUMN, and DDL of tables not captured, pass."""
    q = partial(quote, "oracle")
    message = (
        "'obflow: ' || ORA_DICT_OBJ_NAME || ' is captured; dropping, renaming or retyping its columns would "
        "invalidate its capture trigger and fail every write (ORA-04098). Apply the statement with: "
        'obflow capture ddl --config <config file> "<statement>"\''
    )
    return (
        f"CREATE OR REPLACE TRIGGER {q(schema)}.{q(ORACLE_DDL_GUARD)} BEFORE ALTER ON {q(schema)}.SCHEMA\n"
        "DECLARE\n"
        "  v_parts ORA_NAME_LIST_T;\n"
        "  v_count PLS_INTEGER;\n"
        "  v_text CLOB;\n"
        "  v_captured PLS_INTEGER;\n"
        "BEGIN\n"
        "  IF ORA_DICT_OBJ_TYPE != 'TABLE'\n"
        f"     OR SYS_CONTEXT('USERENV', 'CLIENT_IDENTIFIER') = '{ORACLE_DDL_CLIENT}' THEN\n"
        "    RETURN;\n"
        "  END IF;\n"
        "  SELECT COUNT(*) INTO v_captured FROM ALL_TRIGGERS WHERE OWNER = ORA_DICT_OBJ_OWNER\n"
        "    AND TABLE_NAME = ORA_DICT_OBJ_NAME AND TRIGGER_NAME = ORA_DICT_OBJ_NAME || '$OBF_TRG';\n"
        "  IF v_captured = 0 THEN\n"
        "    RETURN;\n"
        "  END IF;\n"
        "  v_count := ORA_SQL_TXT(v_parts);\n"
        "  FOR i IN 1 .. v_count LOOP\n"
        "    v_text := v_text || v_parts(i);\n"
        "  END LOOP;\n"
        "  IF REGEXP_LIKE(v_text, '(DROP|RENAME)\\s+COLUMN|DROP\\s*\\(|SET\\s+UNUSED', 'i')\n"
        "     OR (REGEXP_LIKE(v_text, '\\sMODIFY(\\s|\\()', 'i')\n"
        "         AND NOT REGEXP_LIKE(v_text,\n"
        "           'MODIFY\\s+((SUB)?PARTITION|LOB|CONSTRAINT|DEFAULT\\s+ATTRIBUTES)', 'i'))\n"
        "  THEN\n"
        f"    RAISE_APPLICATION_ERROR(-20901, {message});\n"
        "  END IF;\n"
        "END;"
    )


def script(dialect: Dialect, statements: list[str]) -> str:
    """``statements`` as a script a DBA can review and run (obclient, SQL*Plus: PL/SQL ends with ``/``)."""
    if dialect == "oracle":
        return "\n\n".join(f"{s}\n/" if s.rstrip().endswith("END;") else f"{s};" for s in statements) + "\n"
    return ";\n\n".join(statements) + ";\n"


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
    columns = ", ".join(column_expression(dialect, c, schema=table.schema) for c in table.columns) + ", " + keys
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
