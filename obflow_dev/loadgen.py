"""The demo's sample schema and load: INSERT/UPDATE/DELETE on realistic tables, with the history kept.

Three tables (MySQL mode): ``customers`` and ``orders`` with numbers, strings, timestamps and
nullable columns, and ``order_lines`` with a composite primary key. Every row carries a ``version``
that each update increments, so the history of a row — the ops and versions in commit order — is
what its output rows must show, once each and in that order. Each statement commits on its own.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

SCHEMA = [
    "CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(80) NOT NULL, email VARCHAR(120) NULL, "
    "tier VARCHAR(10) NOT NULL, created_at TIMESTAMP(6) NOT NULL, version INT NOT NULL)",
    "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, status VARCHAR(16) NOT NULL, "
    "amount DECIMAL(12,2) NOT NULL, note VARCHAR(200) NULL, created_at DATETIME(6) NOT NULL, "
    "paid_at TIMESTAMP(6) NULL, version INT NOT NULL)",
    "CREATE TABLE order_lines (order_id BIGINT NOT NULL, line_no INT NOT NULL, sku VARCHAR(20) NOT NULL, "
    "qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, version INT NOT NULL, PRIMARY KEY (order_id, line_no))",
]

COLUMNS: dict[str, list[dict[str, str]]] = {
    "customers": [
        {"name": "id", "type": "BIGINT"},
        {"name": "name", "type": "VARCHAR(80)"},
        {"name": "email", "type": "VARCHAR(120)"},
        {"name": "tier", "type": "VARCHAR(10)"},
        {"name": "created_at", "type": "TIMESTAMP(6)"},
        {"name": "version", "type": "INT"},
    ],
    "orders": [
        {"name": "id", "type": "BIGINT"},
        {"name": "customer_id", "type": "BIGINT"},
        {"name": "status", "type": "VARCHAR(16)"},
        {"name": "amount", "type": "DECIMAL(12,2)"},
        {"name": "note", "type": "VARCHAR(200)"},
        {"name": "created_at", "type": "DATETIME(6)"},
        {"name": "paid_at", "type": "TIMESTAMP(6)"},
        {"name": "version", "type": "INT"},
    ],
    "order_lines": [
        {"name": "order_id", "type": "BIGINT"},
        {"name": "line_no", "type": "INT"},
        {"name": "sku", "type": "VARCHAR(20)"},
        {"name": "qty", "type": "INT"},
        {"name": "price", "type": "DECIMAL(10,2)"},
        {"name": "version", "type": "INT"},
    ],
}
"""The typed output columns of each table (``source.tables[].columns``)."""


def create_schema(connection: Any, database: str) -> None:
    """The sample tables in ``database`` (both created when missing; tables already there are kept)."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        cursor.execute(f"USE {database}")
        cursor.execute("SHOW TABLES")
        if not cursor.fetchall():
            for statement in SCHEMA:
                cursor.execute(statement)


KEYS = {"customers": ("id",), "orders": ("id",), "order_lines": ("order_id", "line_no")}
RowKey = tuple[str, tuple[int, ...]]


@dataclass
class History:
    """What the load did, per row, in commit order: (op, version) with op c, u or d."""

    rows: dict[RowKey, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    changes: int = 0
    ops: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, table: str, key: tuple[int, ...], op: str, version: int) -> None:
        self.rows[(table, key)].append((op, version))
        self.changes += 1
        self.ops[op] += 1


class LoadGenerator(threading.Thread):
    """Writes ``total`` changes at ``rate`` per second (or until ``duration`` passes), one per transaction."""

    def __init__(self, connect: Any, total: int, rate: float, duration: float | None = None, seed: int = 7) -> None:
        super().__init__(name="obflow-load", daemon=True)
        self.connect, self.total, self.rate, self.duration = connect, total, rate, duration
        self.rng = random.Random(seed)
        self.history = History()
        self.live: dict[str, dict[tuple[int, ...], int]] = {table: {} for table in KEYS}
        self.next_id = 1
        self.stop_event = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            conn = self.connect()
            with conn.cursor() as cursor:
                started = time.monotonic()
                while self.history.changes < self.total and not self.stop_event.is_set():
                    if self.duration is not None and time.monotonic() - started > self.duration:
                        break
                    self._one_change(cursor)
                    ahead = self.history.changes / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        self.stop_event.wait(ahead)
            conn.close()
        except Exception as exc:  # reported by the demo, which then stops
            self.error = exc

    def _one_change(self, cursor: Any) -> None:
        table = self.rng.choices(["customers", "orders", "order_lines"], weights=[1, 3, 4])[0]
        live = self.live[table]
        roll = self.rng.random()
        if not live or roll < 0.45:
            self._insert(cursor, table)
        elif roll < 0.87:
            key = self.rng.choice(list(live))
            version = live[key] + 1
            self._update(cursor, table, key, version)
            live[key] = version
            self.history.record(table, key, "u", version)
        else:
            key = self.rng.choice(list(live))
            where = " AND ".join(f"{column} = %s" for column in KEYS[table])
            cursor.execute(f"DELETE FROM {table} WHERE {where}", key)
            self.history.record(table, key, "d", live.pop(key))

    def _insert(self, cursor: Any, table: str) -> None:
        rng, now = self.rng, time.time()
        if table == "customers":
            key: tuple[int, ...] = (self._new_id(),)
            email = None if rng.random() < 0.3 else f"user{key[0]}@example.com"
            cursor.execute(
                "INSERT INTO customers VALUES (%s, %s, %s, %s, FROM_UNIXTIME(%s), 1)",
                (key[0], f"Customer {key[0]}", email, rng.choice(["gold", "silver", "basic"]), now),
            )
        elif table == "orders":
            key = (self._new_id(),)
            amount = Decimal(rng.randrange(100, 10_000_000)) / 100
            note = None if rng.random() < 0.5 else "gift wrap"
            cursor.execute(
                "INSERT INTO orders VALUES (%s, %s, 'NEW', %s, %s, NOW(6), NULL, 1)",
                (key[0], rng.randrange(1, 1000), amount, note),
            )
        else:
            order = self.rng.randrange(1, max(self.next_id, 2))
            line = 1 + sum(1 for o, _ in self.live["order_lines"] if o == order)
            key = (order, line)
            if key in self.live["order_lines"]:
                return self._insert(cursor, "orders")
            price = Decimal(rng.randrange(100, 100_000)) / 100
            cursor.execute(
                "INSERT INTO order_lines VALUES (%s, %s, %s, %s, %s, 1)",
                (order, line, f"SKU-{rng.randrange(1, 500):04d}", rng.randrange(1, 10), price),
            )
        self.live[table][key] = 1
        self.history.record(table, key, "c", 1)
        return None

    def _update(self, cursor: Any, table: str, key: tuple[int, ...], version: int) -> None:
        where = " AND ".join(f"{column} = %s" for column in KEYS[table])
        values: list[object]
        if table == "customers":
            sets, values = "tier = %s", [self.rng.choice(["gold", "silver", "basic"])]
        elif table == "orders":
            status = self.rng.choice(["PAID", "SHIPPED", "DONE"])
            sets, values = "status = %s, paid_at = IF(%s = 'PAID', NOW(6), paid_at)", [status, status]
        else:
            sets, values = "qty = %s", [self.rng.randrange(1, 10)]
        cursor.execute(f"UPDATE {table} SET {sets}, version = %s WHERE {where}", (*values, version, *key))

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1
