"""The ledger's schema (DESIGN §6), defined once: new ledgers and forward migrations are both made from it.

Every table, column, index and trigger names the schema version that introduced it (`since`) and,
for an index later replaced, the version that dropped it (`until`); `Backfill`s are the data changes a
migration makes to rows recorded before it. `create(version)` gives the SQLite statements of a new
ledger of any version, made in one pass; `migrate(db, version)` brings a ledger of version - 1 to
`version` on a sqlite-utils Database (imported by the caller, only when an old ledger is migrated).
Both run inside the store's transaction.
`postgres_create(version)` and `postgres_migrate(version)` render the same definition as PostgreSQL
statements (schema_pg.py) for the PostgreSQL store; tests/test_schema_dialects.py checks both make
the same tables, columns and indexes.
Released versions never change, since ledgers made by them exist: a new schema is a new version
number on new elements. Reading needs none of this beyond SCHEMA_VERSION and `live_job`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.model import CO_ACTIVE, CUSTOM_OBJECT_JOB

if TYPE_CHECKING:
    from sqlite_utils import Database

SCHEMA_VERSION = 5
LIVE_SCHEMA = 3  # the first version with jobs.superseded and a live-jobs index
BLOBS_SCHEMA = 5  # the first version with the blobs table (a PostgreSQL ledger's results and sent files)
BLOB_PART_BYTES = 1 << 20  # one blobs row holds at most this much of a file, so no step holds a whole result


@dataclass(frozen=True)
class Column:
    """A column; one added after its table (`since` later than the table's) needs a NOT NULL `default`."""

    name: str
    type: type
    since: int = 1
    not_null: bool = False
    default: object = None
    references: str | None = None  # a table whose id this column refers to


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    pk: str = "id"
    since: int = 1


@dataclass(frozen=True)
class Index:
    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False
    where: str | None = None  # a partial index's condition
    since: int = 1
    until: int | None = None  # the version whose migration drops it


@dataclass(frozen=True)
class Trigger:
    name: str
    sql: str
    since: int = 1
    postgres: tuple[str, ...] = ()  # the same trigger in PostgreSQL: its function, then CREATE TRIGGER


@dataclass(frozen=True)
class Backfill:
    """SQL a migration to `version` runs over the rows recorded before it."""

    version: int
    sql: str


# A job the planner may still act on or count, whatever the specs say: the latest of its name and not
# retired; not done yet; done with a result refresh would still archive (so its drift shows); or a
# custom object job that may still hold a slot (a forgotten running one). A name with none of these is
# removed and retired for good: the planner gives it no change, no slot and no drift. An index is
# defined on exactly this text; changing it needs a new version with a new index.
_ACTIVE = ", ".join(f"'{status}'" for status in sorted(CO_ACTIVE))


def _live_job(has_output_url: str) -> str:
    return (
        "(phase != 'retired' AND (superseded = 0 OR phase != 'done' OR (result_path IS NULL AND remote_id IS NOT NULL"
        f" AND (kind = '{CUSTOM_OBJECT_JOB}' OR {has_output_url}))))"
        f" OR (kind = '{CUSTOM_OBJECT_JOB}' AND remote_status IN ({_ACTIVE}))"
    )


# Version 3 looked for the text `"output_url":` anywhere in detail; version 4 reads the key itself
# (an edited detail that is not JSON has none, instead of making json_extract fail).
LIVE_JOB_V3 = _live_job("instr(detail, '\"output_url\":') > 0")
LIVE_JOB = _live_job("CASE WHEN json_valid(detail) THEN json_extract(detail, '$.output_url') END IS NOT NULL")


def live_job(version: int) -> str:
    """The LIVE_JOB condition a ledger of this schema version indexes (LIVE_SCHEMA or later)."""
    return LIVE_JOB if version >= 4 else LIVE_JOB_V3


def _append_only(op: str) -> Trigger:
    return Trigger(
        f"events_no_{op.lower()}",
        f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events "
        "BEGIN SELECT RAISE(ABORT, 'events are append-only'); END",
        postgres=(
            "CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$",
            f"CREATE TRIGGER events_no_{op.lower()} BEFORE {op} ON events FOR EACH ROW "
            "EXECUTE FUNCTION events_append_only()",
        ),
    )


TABLES = (
    Table("meta", (
        Column("id", int), Column("lineage", str, not_null=True), Column("serial", int, not_null=True),
        Column("schema_version", int, not_null=True), Column("environment", str, not_null=True),
        Column("base_url", str, not_null=True), Column("head_hash", str, not_null=True),
        Column("events_count", int), Column("created_at", str),
    )),
    Table("runs", (
        Column("id", int), Column("command", str, not_null=True), Column("actor", str, not_null=True),
        Column("pid", int), Column("commit", str), Column("ci_run_url", str), Column("plan_digest", str),
        Column("started_at", str, not_null=True), Column("finished_at", str), Column("outcome", str),
    )),
    Table("jobs", (
        Column("id", int), Column("name", str, not_null=True), Column("kind", str, not_null=True),
        Column("generation", int, not_null=True), Column("fingerprint", str, not_null=True),
        Column("fingerprint_version", int), Column("revision", int), Column("remote_id", str),
        Column("idempotency_key", str, not_null=True), Column("phase", str, not_null=True),
        Column("remote_status", str), Column("uploaded", int), Column("total", int), Column("processed", int),
        Column("succeeded", int), Column("failed", int), Column("detail", str), Column("result_path", str),
        Column("result_sha256", str), Column("rerun", int), Column("created_at", str), Column("updated_at", str),
        Column("run_id", int, references="runs"),
        # every job with a later generation of its name; kept by jobs_supersede for any insert
        Column("superseded", int, since=3, not_null=True, default=0),
    )),
    Table("events", (
        Column("id", int), Column("ts", str, not_null=True), Column("run_id", int, references="runs"),
        Column("name", str), Column("event_type", str, not_null=True), Column("method", str), Column("path", str),
        Column("http_status", int), Column("request_id", str), Column("track_id", str),
        Column("idempotency_key", str), Column("outcome", str), Column("actor", str), Column("detail", str),
        Column("prev_hash", str, not_null=True), Column("hash", str, not_null=True),
    )),
    Table("locks", (
        Column("id", str), Column("user", str), Column("host", str), Column("pid", int), Column("ci_run_url", str),
        Column("acquired_at", float), Column("heartbeat_at", float), Column("lease_seconds", float),
    )),
    # The files a ledger archives (results, sent files), by the path they have under state/, in parts of
    # BLOB_PART_BYTES. A PostgreSQL ledger keeps them here (ledger/blobs.py); a SQLite ledger keeps them as
    # those very files beside it and leaves this table empty, so a copy between the two moves them 1:1.
    Table("blobs", (
        Column("id", int), Column("ref", str, not_null=True), Column("part", int, not_null=True),
        Column("data", bytes, not_null=True),
    ), since=BLOBS_SCHEMA),
)

INDEXES = (
    Index("jobs_by_idempotency_key", "jobs", ("idempotency_key",), unique=True),
    Index("jobs_by_name_generation", "jobs", ("name", "generation"), unique=True),
    Index("jobs_by_remote_id", "jobs", ("remote_id",)),
    # `history NAME --limit N` reads an index instead of scanning every event
    Index("events_by_name", "events", ("name",), since=2),
    # `recorded_state(names)` finds the names that still need planning by an index
    Index("jobs_live", "jobs", ("name",), where=LIVE_JOB_V3, since=3, until=4),
    Index("jobs_live_v4", "jobs", ("name",), where=LIVE_JOB, since=4),
    Index("blobs_by_ref_part", "blobs", ("ref", "part"), unique=True, since=BLOBS_SCHEMA),
)

TRIGGERS = (
    _append_only("UPDATE"),
    _append_only("DELETE"),
    Trigger(
        "jobs_supersede",
        "CREATE TRIGGER jobs_supersede AFTER INSERT ON jobs BEGIN "
        "UPDATE jobs SET superseded = 1 WHERE name = NEW.name AND generation < NEW.generation AND superseded = 0; "
        "UPDATE jobs SET superseded = 1 WHERE id = NEW.id AND EXISTS "
        "(SELECT 1 FROM jobs later WHERE later.name = NEW.name AND later.generation > NEW.generation); END",
        since=3,
        postgres=(
            "CREATE OR REPLACE FUNCTION jobs_supersede() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "UPDATE jobs SET superseded = 1 WHERE name = NEW.name AND generation < NEW.generation AND superseded = 0; "
            "UPDATE jobs SET superseded = 1 WHERE id = NEW.id AND EXISTS "
            "(SELECT 1 FROM jobs later WHERE later.name = NEW.name AND later.generation > NEW.generation); "
            "RETURN NULL; END $$",
            "CREATE TRIGGER jobs_supersede AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_supersede()",
        ),
    ),
)

BACKFILLS = (
    Backfill(3, "UPDATE jobs SET superseded = 1 WHERE EXISTS "
                "(SELECT 1 FROM jobs later WHERE later.name = jobs.name AND later.generation > jobs.generation)"),
)


def alive(index: Index, version: int) -> bool:
    """Whether a ledger of this version has the index."""
    return index.since <= version and (index.until is None or version < index.until)


def index_sql(index: Index) -> str:
    """CREATE INDEX for either dialect (the same text in both)."""
    columns = ", ".join(f'"{c}"' for c in index.columns)
    unique = "UNIQUE " if index.unique else ""
    where = f" WHERE {index.where}" if index.where is not None else ""
    return f'CREATE {unique}INDEX "{index.name}" ON "{index.table}" ({columns}){where}'


SQLITE_TYPES = {int: "INTEGER", str: "TEXT", float: "REAL", bytes: "BLOB"}  # as sqlite-utils 4 spells them


def column_sql(table: Table, column: Column, types: Mapping[type, str] = SQLITE_TYPES) -> str:
    """A column's definition in the dialect whose type names `types` gives (an INTEGER primary key is
    SQLite's rowid)."""
    spelled = f'"{column.name}" {types[column.type]}'
    if column.name == table.pk:
        spelled += " PRIMARY KEY"
    if column.not_null:
        spelled += " NOT NULL"
    if column.default is not None:
        spelled += f" DEFAULT {column.default!r}"
    if column.references:
        spelled += f' REFERENCES "{column.references}" ("id")'
    return spelled


def table_sql(table: Table, version: int, column: Callable[[Table, Column], str] = column_sql) -> str:
    """CREATE TABLE of `table` as a ledger of `version` has it, each column spelled by `column`."""
    return f'CREATE TABLE "{table.name}" ({", ".join(column(table, c) for c in table.columns if c.since <= version)})'


def create(version: int = SCHEMA_VERSION) -> list[str]:
    """The SQLite statements that make the (empty) tables, indexes and triggers of a new ledger of this
    version: plain SQL, so making a ledger needs no sqlite-utils (that it is what `migrate` makes from
    an older version is checked by tests/test_schema_dialects.py)."""
    statements = [table_sql(t, version) for t in TABLES if t.since <= version]
    statements += [index_sql(i) for i in INDEXES if alive(i, version)]
    return statements + [t.sql for t in TRIGGERS if t.since <= version]


def migrate(db: Database, version: int) -> None:
    """Bring a ledger of schema version - 1 to `version` (the caller records the new version in meta)."""
    for table in TABLES:
        if table.since == version:
            db.execute(table_sql(table, version))
        elif table.since < version:
            for column in table.columns:
                if column.since == version:
                    db.table(table.name).add_column(column.name, column.type, not_null_default=column.default)
    for backfill in BACKFILLS:
        if backfill.version == version:
            db.execute(backfill.sql)
    for index in INDEXES:
        if index.until == version:
            db.execute(f'DROP INDEX "{index.name}"')
    for index in INDEXES:
        if index.since == version:
            db.execute(index_sql(index))
    for trigger in TRIGGERS:
        if trigger.since == version:
            db.execute(trigger.sql)


def postgres_create(version: int = SCHEMA_VERSION) -> list[str]:
    """The PostgreSQL statements that make a new ledger of this schema version (see schema_pg.py)."""
    from reconciler.ledger.schema_pg import create_statements

    return create_statements(version)


def postgres_migrate(version: int) -> list[str]:
    """The PostgreSQL statements that bring a ledger of schema version - 1 to `version`."""
    from reconciler.ledger.schema_pg import migrate_statements

    return migrate_statements(version)
