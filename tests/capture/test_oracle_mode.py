"""The PL/SQL capture generates for OceanBase Oracle mode, per column type and case.

No Oracle-mode tenant runs on this machine (seekdb is MySQL mode only), so these tests check the generated
text: what each type renders to, that nothing depends on the session's NLS settings, that the statements
are well formed (quotes and parentheses balance, inside EXECUTE IMMEDIATE too), and, for the DDL guard,
that its regular expressions classify real ALTER TABLE statements as intended (evaluated with Python's re,
whose syntax for the constructs used is the same as Oracle's).
"""

from __future__ import annotations

import re

import pytest

from capture_agent.dialects import (
    ORACLE_BASE64_FUNCTION,
    ORACLE_DDL_CLIENT,
    VERSION_KEY,
    Column,
    TableInfo,
    column_expression,
    install_ddl,
    json_image,
    oracle_capturable,
    oracle_ddl_guard,
    oracle_trigger,
    row_by_key_query,
    schema_version,
    script,
    sql_type,
    table_schema,
    trigger_ddl,
    uninstall_ddl,
)

NUMBER_TEXT = "REGEXP_REPLACE(TO_CHAR({ref}, 'TM9', 'NLS_NUMERIC_CHARACTERS=''.,'''), '^(-?)\\.', '\\10.')"


def render(data_type: str, name: str = "C") -> str:
    return column_expression("oracle", Column(name, data_type), ":NEW.", "TRADE")


def table(*columns: tuple[str, str], key: tuple[str, ...] = ("ID",)) -> TableInfo:
    return TableInfo("TRADE", "ORDERS", tuple(Column(n, t) for n, t in (("ID", "number"), *columns)), key)


def sql_tokens_balance(sql: str) -> bool:
    """Quotes close and parentheses balance outside string literals and quoted identifiers; a literal that
    is itself a statement (EXECUTE IMMEDIATE '...') is checked the same way."""
    depth, i, literals = 0, 0, []
    while i < len(sql):
        char = sql[i]
        if char in "'\"":
            end = i + 1
            while True:
                end = sql.find(char, end)
                if end < 0:
                    return False
                if char == "'" and sql.startswith("''", end):
                    end += 2
                    continue
                break
            if char == "'":
                literals.append(sql[i + 1 : end].replace("''", "'"))
            i = end + 1
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
        i += 1
    statements = [text for text in literals if re.match(r"\s*(CREATE|DROP)\s", text)]
    return depth == 0 and all(sql_tokens_balance(text) for text in statements)


def top_level_arguments(sql: str, function: str) -> list[list[str]]:
    """The arguments of every call of ``function`` in ``sql`` (split at top-level commas)."""
    calls = []
    for match in re.finditer(re.escape(function) + r"\(", sql):
        depth, start, args, i, quote = 1, match.end(), [], match.end(), ""
        while depth:
            char = sql[i]
            if quote:
                quote = "" if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            elif char == "," and depth == 1:
                args.append(sql[start:i].strip())
                start = i + 1
            i += 1
        calls.append([*args, sql[start : i - 1].strip()])
    return calls


@pytest.mark.parametrize("data_type", ["number", "number(12,2)", "float", "integer", "decimal"])
def test_numbers_render_with_a_dot_and_a_leading_zero_in_any_session(data_type: str) -> None:
    assert render(data_type) == NUMBER_TEXT.format(ref=':NEW."C"')


def test_the_leading_zero_pattern_turns_dot_5_into_0_5_and_leaves_other_numbers() -> None:
    # Oracle's backreferences are one digit: '\10.' is group 1, then "0." (Python spells it \g<1>0.)
    pattern, replacement = "^(-?)\\.", "\\g<1>0."
    assert [re.sub(pattern, replacement, text) for text in (".5", "-.5", "12.5", "0", "-3", "1E+100")] == [
        "0.5", "-0.5", "12.5", "0", "-3", "1E+100",
    ]  # fmt: skip


def test_dates_and_timestamps_use_numeric_format_elements_only() -> None:
    assert render("date") == 'TO_CHAR(:NEW."C", \'YYYY-MM-DD"T"HH24:MI:SS\')'
    assert render("timestamp(6)") == 'TO_CHAR(:NEW."C", \'YYYY-MM-DD"T"HH24:MI:SS.FF6\')'
    assert render("timestamp(3)").endswith(".FF3')")
    assert render("timestamp(0)") == 'TO_CHAR(:NEW."C", \'YYYY-MM-DD"T"HH24:MI:SS\')'
    for data_type in ("date", "timestamp(9)", "timestamp(6) with time zone", "timestamp with local time zone"):
        mask = re.search(r"'(YYYY[^']*)'", render(data_type))
        assert mask is not None
        assert not re.search(r"MON|DAY|DY|AM|PM|TZR|TZD|RR|D\b", mask.group(1).replace('"T"', "")), mask.group(1)


def test_time_zone_timestamps_are_written_as_utc_instants() -> None:
    assert render("timestamp(6) with time zone") == (
        'TO_CHAR(SYS_EXTRACT_UTC(:NEW."C"), \'YYYY-MM-DD"T"HH24:MI:SS.FF6"Z"\')'
    )
    assert render("timestamp(3) with local time zone") == (
        'TO_CHAR(SYS_EXTRACT_UTC(CAST(:NEW."C" AS TIMESTAMP WITH TIME ZONE)), \'YYYY-MM-DD"T"HH24:MI:SS.FF3"Z"\')'
    )


def test_intervals_are_iso_8601_durations_null_safe_and_signed() -> None:
    year_month = render("interval year(2) to month")
    assert year_month.startswith('CASE WHEN :NEW."C" IS NULL THEN NULL ELSE CASE WHEN :NEW."C" < INTERVAL \'0\' MONTH')
    assert "'P' || " in year_month and "|| 'Y' ||" in year_month and year_month.endswith("|| 'M' END")
    assert NUMBER_TEXT.format(ref='ABS(EXTRACT(YEAR FROM :NEW."C"))') in year_month
    day_second = render("interval day(2) to second(6)")
    assert "INTERVAL '0' SECOND" in day_second
    for unit, suffix in (("DAY", "DT"), ("HOUR", "H"), ("MINUTE", "M"), ("SECOND", "S")):
        assert NUMBER_TEXT.format(ref=f'ABS(EXTRACT({unit} FROM :NEW."C"))') + f" || '{suffix}'" in day_second


def test_binary_columns_use_the_base64_function_that_takes_any_blob() -> None:
    function = f'"TRADE"."{ORACLE_BASE64_FUNCTION}"'
    assert render("blob") == f'{function}(:NEW."C")'
    assert render("raw") == f'{function}(TO_BLOB(:NEW."C"))'
    created = install_ddl("oracle", table(("DOC", "blob")))
    body = next(s for s in created if ORACLE_BASE64_FUNCTION in s and "CREATE FUNCTION" in s)
    chunk = int(re.search(r"v_chunk CONSTANT PLS_INTEGER := (\d+)", body).group(1))  # type: ignore[union-attr]
    assert chunk % 3 == 0  # chunks' encodings join without padding in between
    assert chunk * 4 // 3 + chunk * 4 // 3 // 64 * 2 <= 32767  # one chunk's encoding, line breaks too, fits RAW
    assert "REPLACE(REPLACE(" in body and "CHR(13)" in body and "CHR(10)" in body  # UTL_ENCODE's line breaks
    assert "IF p_data IS NULL THEN RETURN NULL" in body
    assert "SQLCODE != -955" in body  # created once, never replaced (that would recompile every trigger)
    assert not any(ORACLE_BASE64_FUNCTION in s for s in install_ddl("oracle", table(("NOTE", "varchar2"))))


def test_character_large_objects_and_rowids() -> None:
    assert render("clob") == ':NEW."C"'
    assert render("nclob") == 'TO_CLOB(:NEW."C")'
    assert render("varchar2") == ':NEW."C"' and render("nvarchar2") == ':NEW."C"'
    assert render("rowid") == 'ROWIDTOCHAR(:NEW."C")'


def test_every_image_returns_a_clob_so_a_wide_row_fits() -> None:
    wide = table(*((f"C{i}", "varchar2") for i in range(300)), ("DOC", "clob"))
    trigger = oracle_trigger(wide)
    assert trigger.count("JSON_OBJECT(") == trigger.count(" RETURNING CLOB)") == 7  # 3 keys, 4 images
    assert json_image("oracle", wide, ":NEW.").endswith(" RETURNING CLOB)")
    assert json_image("mysql", wide, "NEW.").count("RETURNING") == 0


def test_long_columns_are_left_out_so_the_trigger_compiles() -> None:
    columns = (Column("ID", "number"), Column("NOTES", "long"), Column("PIC", "long raw"), Column("S", "varchar2"))
    kept, skipped = oracle_capturable(columns)
    assert [c.name for c in kept] == ["ID", "S"] and skipped == ("NOTES", "PIC")
    trigger = oracle_trigger(TableInfo("TRADE", "ORDERS", kept, ("ID",), skipped))
    assert "NOTES" not in trigger and "PIC" not in trigger


def test_the_trigger_is_nls_free_and_logs_both_images_of_an_update() -> None:
    orders = table(("AMOUNT", "number(12,2)"), ("PAID_AT", "timestamp(6) with time zone"), ("DOC", "blob"))
    trigger = oracle_trigger(orders)
    assert trigger.startswith('CREATE OR REPLACE TRIGGER "TRADE"."ORDERS$OBF_TRG" AFTER INSERT OR UPDATE OR DELETE')
    assert all(len(args) >= 2 for args in top_level_arguments(trigger, "TO_CHAR")), "TO_CHAR without a mask"
    assert "SYSDATE" not in trigger and "CURRENT_TIMESTAMP" not in trigger  # session time zone free
    assert "CAST(SYS_EXTRACT_UTC(SYSTIMESTAMP) AS DATE) - DATE '1970-01-01'" in trigger
    update = trigger.split("ELSIF UPDATING THEN")[1].split("ELSE")[0]
    # the old key is in the before image, so capture turns a key change into a delete and an insert
    assert json_image("oracle", orders, ":OLD.") in update and json_image("oracle", orders, ":NEW.") in update
    assert f"'{VERSION_KEY}' VALUE '{schema_version(orders)}' RETURNING CLOB" in update
    assert trigger.count('"TRADE"."ORDERS$OBF_SEQ".NEXTVAL') == 3
    assert sql_tokens_balance(trigger)


def test_a_key_only_trigger_names_the_key_alone() -> None:
    trigger = oracle_trigger(table(("AMOUNT", "number")), key_only=True)
    assert "AMOUNT" not in trigger and f"'{schema_version(table(('AMOUNT', 'number')))}-key'" in trigger


def test_install_is_rerunnable_and_leaves_a_current_trigger_alone() -> None:
    orders = table(("DOC", "raw"))
    statements = install_ddl("oracle", orders)
    assert len(statements) == 4 and all(sql_tokens_balance(s) for s in statements)
    assert 'CREATE SEQUENCE "TRADE"."ORDERS$OBF_SEQ"' in statements[0] and "ORDER'" in statements[0]
    assert 'CREATE TABLE "TRADE"."ORDERS$OBF_LOG" (SEQ NUMBER(19) PRIMARY KEY' in statements[1]
    current = {"ORDERS$OBF_TRG": oracle_trigger(orders)}
    assert [ORACLE_BASE64_FUNCTION in s for s in trigger_ddl("oracle", orders, current)] == [True]
    assert trigger_ddl("oracle", orders, {"ORDERS$OBF_TRG": oracle_trigger(orders, key_only=True)})[-1] == (
        oracle_trigger(orders)
    )
    assert [s.split("'")[1].split()[1] for s in uninstall_ddl("oracle", orders)] == ["TRIGGER", "SEQUENCE", "TABLE"]


def test_a_row_is_read_back_by_its_key_as_images_render_it() -> None:
    keyed = TableInfo("TRADE", "T", (Column("D", "date"), Column("TS", "timestamp(6)"), Column("R", "raw")),
                      ("D", "TS", "R"))  # fmt: skip
    where = row_by_key_query("oracle", keyed).split(" WHERE ")[1]
    assert where == (
        '"D" = TO_DATE(%s, \'YYYY-MM-DD"T"HH24:MI:SS\') AND "TS" = TO_TIMESTAMP(%s, \'YYYY-MM-DD"T"HH24:MI:SS.FF\') '
        'AND "R" = UTL_ENCODE.BASE64_DECODE(UTL_RAW.CAST_TO_RAW(%s))'
    )


GUARD_CASES = {
    "ALTER TABLE orders DROP COLUMN note": True,
    "alter table orders drop (note, qty)": True,
    'ALTER TABLE "ORDERS" RENAME COLUMN qty TO quantity': True,
    "ALTER TABLE orders SET UNUSED COLUMN note": True,
    "ALTER TABLE orders MODIFY (qty NUMBER(12))": True,
    "ALTER TABLE orders MODIFY(qty NUMBER(12))": True,
    "ALTER TABLE orders\nMODIFY qty VARCHAR2(40)": True,
    "ALTER TABLE orders ADD (c2 NUMBER)": False,
    "ALTER TABLE orders ADD CONSTRAINT ck CHECK (qty > 0)": False,
    "ALTER TABLE orders MODIFY PARTITION p1 COMPRESS": False,
    "ALTER TABLE orders MODIFY CONSTRAINT ck DISABLE": False,
    "ALTER TABLE orders MODIFY LOB (doc) (CACHE)": False,
    "ALTER TABLE orders DROP CONSTRAINT ck": False,
    "ALTER TABLE orders RENAME TO orders_old": False,
}


def test_the_ddl_guard_rejects_what_would_invalidate_a_capture_trigger_and_names_the_safe_command() -> None:
    guard = oracle_ddl_guard("TRADE")
    assert guard.startswith('CREATE OR REPLACE TRIGGER "TRADE"."OBFLOW$DDL_GUARD" BEFORE ALTER ON "TRADE".SCHEMA\n')
    assert f"SYS_CONTEXT('USERENV', 'CLIENT_IDENTIFIER') = '{ORACLE_DDL_CLIENT}'" in guard  # capture ddl passes
    assert "ORA_DICT_OBJ_NAME || '$OBF_TRG'" in guard  # only tables with a capture trigger
    assert "RAISE_APPLICATION_ERROR(-20901, " in guard and "obflow capture ddl --config" in guard
    assert sql_tokens_balance(guard)
    patterns = [
        re.compile(args[1][1:-1].replace("''", "'"), re.I) for args in top_level_arguments(guard, "REGEXP_LIKE")
    ]
    drop_or_rename, modify, harmless_modify = patterns
    for ddl, rejected in GUARD_CASES.items():
        verdict = bool(drop_or_rename.search(ddl)) or (bool(modify.search(ddl)) and not harmless_modify.search(ddl))
        assert verdict == rejected, ddl


def test_a_script_ends_each_plsql_block_with_a_slash() -> None:
    statements = [*install_ddl("oracle", table(("DOC", "blob"))), oracle_ddl_guard("TRADE")]
    text = script("oracle", statements)
    assert text.count("\n/\n") == len(statements) and all(f"{s}\n/\n" in text for s in statements)
    assert script("mysql", ["CREATE TABLE t (a INT)", "DROP TABLE t"]) == "CREATE TABLE t (a INT);\n\nDROP TABLE t;\n"


@pytest.mark.parametrize(
    ("data_type", "catalog", "declared", "kind"),
    [
        ("number", "number(22,12,2)", "number(12,2)", "decimal"),
        ("number", "number(22,10,0)", "number(10,0)", "int"),
        ("number", "number(22,,)", "number", "string"),
        ("float", "float(22,126,)", "float(126)", "double"),
        ("varchar2", "varchar2(40,,)", "varchar2(40)", "string"),
        ("raw", "raw(16,,)", "raw(16)", "binary"),
        ("date", "date(7,,)", "date", "timestamp"),
        ("timestamp(6) with time zone", "timestamp(6) with time zone(13,,6)", "timestamp(6) with time zone",
         "timestamp_tz"),
        ("clob", "clob(4000,,)", "clob", "string"),
    ],
)  # fmt: skip
def test_a_columns_shape_in_events_is_its_declared_type_rebuilt_from_the_catalog(
    data_type: str, catalog: str, declared: str, kind: str
) -> None:
    """ALL_TAB_COLUMNS gives length, precision and scale apart (the agent reads them as
    ``type(length,precision,scale)``); the events' ``table_schema`` names each column's type as it is
    declared, which the job parses as it parses configured columns (obflow.columns)."""
    from obflow.columns import parse_sql_type

    column = Column("C", data_type, catalog)
    assert sql_type("oracle", column) == declared
    assert parse_sql_type(declared).kind == kind
    table = TableInfo("TRADE", "T", (Column("ID", "number", "number(22,12,0)"), column), ("ID",))
    shape = table_schema("oracle", table)
    assert shape.columns == (("ID", "number(12,0)"), ("C", declared)) and shape.version == schema_version(table)
