"""Pure parts of change-log capture: gap tracking bounds and the generated DDL of both dialects."""

from __future__ import annotations

from capture_agent.changelog import track_gaps
from capture_agent.dialects import Column, TableInfo, install_ddl, snapshot_query, uninstall_ddl

ORDERS = TableInfo(
    "TRADE",
    "ORDERS",
    (
        Column("ID", "number"),
        Column("STATUS", "varchar2"),
        Column("PAID_AT", "timestamp(6)"),
        Column("DOC", "raw"),
    ),
    ("ID",),
)


def test_skipped_sequences_become_gap_ranges_and_close_when_seen() -> None:
    gaps, expired = track_gaps([], 0, 10, {1, 2, 3, 6, 10}, now=100, max_count=100, max_age=60)
    assert gaps == [[4, 5, 100], [7, 9, 100]] and expired == []
    gaps, expired = track_gaps(gaps, 10, 12, {5, 8, 11, 12}, now=110, max_count=100, max_age=60)
    assert gaps == [[4, 4, 100], [7, 7, 100], [9, 9, 100]] and expired == []


def test_gaps_expire_by_age() -> None:
    gaps, _ = track_gaps([], 0, 5, {1, 2, 5}, now=100, max_count=100, max_age=60)
    gaps, expired = track_gaps(gaps, 5, 5, set(), now=161, max_count=100, max_age=60)
    assert gaps == [] and expired == [[3, 4, 100]]


def test_gaps_are_bounded_in_count_oldest_first() -> None:
    gaps, _ = track_gaps([], 0, 4, {2, 4}, now=100, max_count=10, max_age=60)  # gaps 1 and 3
    gaps, expired = track_gaps(gaps, 4, 6, {6}, now=101, max_count=2, max_age=60)  # gap 5 is newer
    assert gaps == [[3, 3, 100], [5, 5, 101]]
    assert expired == [[1, 1, 100]]


def test_a_sequence_jump_is_one_range() -> None:
    gaps, _ = track_gaps([], 10, 1_000_011, {1_000_011}, now=1, max_count=10, max_age=60)
    assert gaps == [[11, 1_000_010, 1]]


def test_oracle_mode_ddl_has_sequence_table_and_row_trigger() -> None:
    """OceanBase Oracle mode cannot run here: the generated DDL is checked for its shape only."""
    sequence, table, trigger = install_ddl("oracle", ORDERS)
    assert 'CREATE SEQUENCE "TRADE"."ORDERS$OBF_SEQ"' in sequence and "ORDER" in sequence
    assert "SQLCODE != -955" in sequence and "SQLCODE != -955" in table  # idempotent: exists is fine
    assert 'CREATE TABLE "TRADE"."ORDERS$OBF_LOG" (SEQ NUMBER(19) PRIMARY KEY' in table
    assert trigger.startswith('CREATE OR REPLACE TRIGGER "TRADE"."ORDERS$OBF_TRG" AFTER INSERT OR UPDATE OR DELETE')
    assert 'ON "TRADE"."ORDERS" FOR EACH ROW\n' in trigger
    assert trigger.count('"TRADE"."ORDERS$OBF_SEQ".NEXTVAL') == 3
    assert "JSON_OBJECT('ID' VALUE TO_CHAR(:NEW.\"ID\"))" in trigger  # NUMBER travels as exact text
    assert "'PAID_AT' VALUE TO_CHAR(:OLD.\"PAID_AT\", 'YYYY-MM-DD\"T\"HH24:MI:SS.FF6')" in trigger
    assert 'UTL_ENCODE.BASE64_ENCODE(:NEW."DOC")' in trigger
    assert "DBMS_TRANSACTION.LOCAL_TRANSACTION_ID" in trigger
    assert "'c'" in trigger and "'u'" in trigger and "'d'" in trigger
    assert trigger.rstrip().endswith("END;")
    assert [s.split("'")[1].split()[1] for s in uninstall_ddl("oracle", ORDERS)] == [
        "TRIGGER",
        "SEQUENCE",
        "TABLE",
    ]


def test_mysql_ddl_is_rerunnable() -> None:
    table = TableInfo("shop", "orders", (Column("id", "bigint"), Column("amount", "decimal")), ("id",))
    statements = install_ddl("mysql", table)
    assert statements[0].startswith("CREATE TABLE IF NOT EXISTS `shop`.`orders__obflow_log`")
    assert sum(s.startswith("DROP TRIGGER IF EXISTS") for s in statements) == 3
    assert "CAST(NEW.`amount` AS CHAR)" in statements[2]
    assert snapshot_query("mysql", table, True, 10).endswith("WHERE (`id`) > (%s) ORDER BY `id` LIMIT 10")
