"""schema.py's one definition makes the same ledger on SQLite and on PostgreSQL, new or migrated."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import sqlite_utils

from reconciler.ledger import schema
from reconciler.ledger.schema import SCHEMA_VERSION

_KINDS = {"INTEGER": "int", "TEXT": "str", "FLOAT": "float", "REAL": "float",
          "BLOB": "bytes", "bigint": "int", "text": "str", "double precision": "float", "bytea": "bytes"}


def sqlite_shape(version: int, migrate_from: int | None = None) -> dict:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db = sqlite_utils.Database(conn)
    for statement in schema.create(migrate_from or version):
        conn.execute(statement)
    for step in range((migrate_from or version) + 1, version + 1):
        schema.migrate(db, step)
    tables = {}
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        tables[name] = {row[1]: (_KINDS[row[2]], bool(row[3]) or bool(row[5])) for row in
                        conn.execute(f'PRAGMA table_info("{name}")')}
    indexes = {}
    for name, table in conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' "
                                    "AND name NOT LIKE 'sqlite_autoindex%'"):
        unique = next(r[2] for r in conn.execute(f'PRAGMA index_list("{table}")') if r[1] == name)
        columns = tuple(r[2] for r in conn.execute(f'PRAGMA index_info("{name}")'))
        indexes[name] = (table, columns, bool(unique))
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return {"tables": tables, "indexes": indexes, "triggers": triggers}


def postgres_shape(url: str, version: int, migrate_from: int | None = None) -> dict:
    space = f"v{version}_{migrate_from or 0}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {space}")
        conn.execute(f"SET search_path = {space}")
        for statement in schema.postgres_create(migrate_from or version):
            conn.execute(statement)
        for step in range((migrate_from or version) + 1, version + 1):
            for statement in schema.postgres_migrate(step):
                conn.execute(statement)
        tables: dict = {}
        for table, column, kind, nullable, key in conn.execute(
                "SELECT c.table_name, c.column_name, c.data_type, c.is_nullable, "
                "EXISTS (SELECT 1 FROM information_schema.key_column_usage k JOIN information_schema.table_constraints t "
                "ON t.constraint_name = k.constraint_name AND t.table_schema = k.table_schema "
                "WHERE t.constraint_type = 'PRIMARY KEY' AND k.table_schema = c.table_schema "
                "AND k.table_name = c.table_name AND k.column_name = c.column_name) "
                "FROM information_schema.columns c WHERE c.table_schema = %s ORDER BY c.ordinal_position", (space,)):
            tables.setdefault(table, {})[column] = (_KINDS[kind], nullable == "NO" and not key or key)
        indexes = {}
        for name, table, unique, columns in conn.execute(
                "SELECT i.relname, t.relname, x.indisunique, array(SELECT a.attname FROM unnest(x.indkey) WITH "
                "ORDINALITY AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
                "ORDER BY k.n) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t "
                "ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
                "WHERE n.nspname = %s AND NOT x.indisprimary", (space,)):
            indexes[name] = (table, tuple(columns), unique)
        triggers = {r[0] for r in conn.execute(
            "SELECT tgname FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid JOIN pg_namespace n "
            "ON n.oid = t.relnamespace WHERE n.nspname = %s AND NOT g.tgisinternal", (space,))}
    return {"tables": tables, "indexes": indexes, "triggers": triggers}


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_both_dialects_make_the_same_tables_columns_indexes_and_triggers(pg_url, version):
    mine, theirs = sqlite_shape(version), postgres_shape(pg_url, version)
    assert mine == theirs
    blobs = {"blobs"} if version >= 5 else set()  # results and sent files, kept there by a PostgreSQL ledger
    assert set(mine["tables"]) == {"meta", "runs", "jobs", "events", "locks"} | blobs


@pytest.mark.parametrize("old", range(1, SCHEMA_VERSION))
def test_migrating_forward_makes_what_a_new_ledger_has_in_both_dialects(pg_url, old):
    new = postgres_shape(pg_url, SCHEMA_VERSION)
    assert postgres_shape(pg_url, SCHEMA_VERSION, migrate_from=old) == new
    assert sqlite_shape(SCHEMA_VERSION, migrate_from=old) == sqlite_shape(SCHEMA_VERSION) == new
