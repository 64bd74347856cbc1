"""Pure parts of change-log capture: gap tracking bounds and the generated MySQL-family DDL (Oracle mode:
test_oracle_mode.py)."""

from __future__ import annotations

from capture_agent.changelog import track_gaps
from capture_agent.dialects import (
    STALE_TRIGGER_ERRORS,
    VERSION_KEY,
    Column,
    TableInfo,
    install_ddl,
    schema_version,
    snapshot_query,
    uninstall_ddl,
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


def test_mysql_ddl_is_rerunnable_and_replaces_a_trigger_without_a_moment_uncaptured() -> None:
    table = TableInfo("shop", "orders", (Column("id", "bigint"), Column("amount", "decimal")), ("id",))
    fresh = install_ddl("mysql", table)
    assert fresh[0].startswith("CREATE TABLE IF NOT EXISTS `shop`.`orders__obflow_log`")
    assert [s.split()[2] for s in fresh[1:]] == [f"`shop`.`orders__obflow_{op}`" for op in ("ins", "upd", "del")]
    assert "CAST(NEW.`amount` AS CHAR)" in fresh[2]
    # every trigger catches a column gone under it and then logs the key (or only the op), with its shape
    assert all(f"DECLARE CONTINUE HANDLER FOR {STALE_TRIGGER_ERRORS}" in s for s in fresh[1:])
    assert f"'{VERSION_KEY}', '{schema_version(table)}'" in fresh[1]

    installed = dict.fromkeys(["orders__obflow_ins", "orders__obflow_upd", "orders__obflow_del"], "older shape")
    assert install_ddl("mysql", table, {name: fresh[1] for name in installed}) == fresh[:1]  # all current
    swap = install_ddl("mysql", table, installed)[1:]  # the new trigger after the old, then the old dropped
    assert [" ".join(s.split()[:3]) for s in swap[:2]] == [
        "CREATE TRIGGER `shop`.`orders__obflow_ins_b`",
        "DROP TRIGGER IF",
    ]
    assert "FOR EACH ROW FOLLOWS `orders__obflow_ins` BEGIN" in swap[0] and swap[1].endswith("`orders__obflow_ins`")
    back = install_ddl("mysql", table, {name + "_b": "" for name in installed})[1:]
    assert back[0].startswith("CREATE TRIGGER `shop`.`orders__obflow_ins` ") and back[1].endswith("_ins_b`")
    in_place = install_ddl("mysql", table, installed, replace_in_place=True)[1:]
    assert [" ".join(s.split()[:5]) for s in in_place] == [
        f"CREATE OR REPLACE TRIGGER `shop`.`orders__obflow_{op}`" for op in ("ins", "upd", "del")
    ]
    key_only = install_ddl("mysql", table, key_only=True)[2]
    assert (
        "amount" not in key_only.split("END;")[1] and f"'{schema_version(table)}-key'" in key_only
    )  # the key-only trigger names the key's columns alone
    assert len(uninstall_ddl("mysql", table)) == 7  # both slots of each op, then the log
    assert snapshot_query("mysql", table, True, 10).endswith("WHERE (`id`) > (%s) ORDER BY `id` LIMIT 10")
