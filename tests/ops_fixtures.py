"""Real spec repositories and real ledgers for the operating commands' tests (status, show, errors, ...).

`applied` runs real `reconciler apply`s on the embedded sandbox (`environment: local`, persisted in
the repo's state/local/sandbox.db). `submit` records one job the way apply does (intent, remote call,
result) with the ledger API and the real ZuoraClient, for the situations a valid spec cannot reach
through apply (a job that fails as a whole, with `fail_in_tenant`). Time moves by advancing the sandbox's clock through its
admin API, so tests never sleep.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from reconciler.engine.refresh import refresh as refresh_jobs
from reconciler.engine.config import load_settings
from reconciler.actions import OPERATIONS
from reconciler.model import MASS_ACTION
from reconciler.sandbox import make_app
from reconciler.engine.run import Session
from reconciler.spec.load import load_desired

PAYMENTS_CSV = """\
Group ID,Billing Account ID,Payment Invoice,Payment Amount,Currency,Payment Date,Payment Method ID,Payment Comment,#Customer
G1,A001,INV001:1200.00|INV002:400.00,1500.00,USD,2026-11-04,PM01,"Wire, two invoices",Acme
G1,A001,INV002:100.00,100.00,USD,2026-11-05,PM01,Remainder,Acme
,A002,INV003:980.00,980.00,EUR,2026-11-04,PM01,SEPA transfer,Northwind
,,,75.00,USD,2026-11-06,PM03,Unidentified check,unknown
"""
FX_CSV = """\
Group ID,Provider Exchange Rate Date,Currency (From),Currency (To),Exchange Rate,#Source
D1,2026-11-02,EUR,USD,1.0842,ECB
D1,2026-11-02,GBP,USD,1.2931,ECB
"""
VEHICLES_CSV = """\
make__c,model__c,year__c,vin__c
Volvo,FH16,2024,YV2RT40A5RB123456
Scania,R 450,1998,YS2R4X20005432101
DAF,XF 480,2022,XLRTEH4300G135790
"""
VEHICLE_UPDATES_CSV = """\
Id,make__c,model__c,year__c,vin__c
1b1e6bd6-3c1f-4a2e-9d0c-5f7f2c1a0e01,Volvo,FH16,2024,YV2RT40A5RB123456
6e0c9a7b-8f2d-4c1b-a5e3-2d9b7c4f1a02,Scania,R 450,1998,YS2R4X20005432101
"""
SPECS = {
    "finance.yaml": """\
        apiVersion: reconciler/v1
        kind: MassAction
        metadata: {name: payments, description: November payments, labels: {team: finance}}
        spec:
          actionType: MPU
          file: ../data/payments.csv
        ---
        apiVersion: reconciler/v1
        kind: MassAction
        metadata: {name: fx-rates}
        spec:
          actionType: ImportFXRate
          file: ../data/fx.csv
        """,
    "vehicles.yaml": """\
        apiVersion: reconciler/v1
        kind: CustomObjectJob
        metadata: {name: load-vehicles}
        spec:
          object: vehicle
          operation: create
          file: ../data/vehicles.csv
        ---
        apiVersion: reconciler/v1
        kind: CustomObjectJob
        metadata: {name: update-vehicles}
        spec:
          object: vehicle
          operation: update
          file: ../data/vehicle-updates.csv
          dependsOn: [load-vehicles]
        ---
        apiVersion: reconciler/v1
        kind: CustomObjectJob
        metadata: {name: purge-old-vehicles}
        spec:
          object: vehicle
          operation: delete
          filter:
            conditions:
              - {field: year__c, operator: LT, value: 2000}
          dependsOn: [load-vehicles]
        """,
}
DATA = {"payments.csv": PAYMENTS_CSV, "fx.csv": FX_CSV, "vehicles.csv": VEHICLES_CSV,
        "vehicle-updates.csv": VEHICLE_UPDATES_CSV}


def make_repo(root: Path) -> Path:
    """A spec repository on the embedded sandbox: two Mass Updater specs and three custom object specs."""
    (root / "specs").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "reconciler.yaml").write_text("specs: specs\nledger: state/{environment}/ledger.db\nenvironment: local\n")
    for name, text in SPECS.items():
        (root / "specs" / name).write_text(textwrap.dedent(text))
    for name, text in DATA.items():
        (root / "data" / name).write_text(text)
    return root


def settings_of(root: Path):
    """The repo's Settings, as the CLI would load them when started in `root`."""
    return load_settings(chdir=str(root))


def submit(settings, name: str, *, key: str | None = None, file: Path | None = None):
    """Submit one spec's job as apply does (intent, remote call, result) and return its JobRecord.

    `file` sends another file than the spec's (one Zuora rejects whole, which validation would stop).
    """
    spec = load_desired(settings).by_name()[name]
    session = Session(settings, command="apply")
    ledger, client = session.ledger, session.client
    try:
        with session.acting_on(name):
            generation = ledger.next_generation(name)
            key = key or f"test-{ledger.lineage}-{name}-{generation}"
            detail = {"file": spec.file, "file_sha256": spec.file_sha256}
            if spec.kind == MASS_ACTION:
                detail["actionType"] = spec.action_type
            else:
                detail.update(namespace=spec.namespace, object=spec.object, operation=spec.operation)
            job = ledger.add_intent(
                run_id=session.run_id, name=name, kind=spec.kind, generation=generation, fingerprint=spec.fingerprint,
                fingerprint_version=spec.fingerprint_version, revision=spec.revision, idempotency_key=key,
                detail=detail,
            )
            if spec.kind == MASS_ACTION:
                bulk_key = client.submit_mass_action(spec.action_type, file or settings.root / spec.file,
                                                     idempotency_key=key)
                job = ledger.record_submitted(job.id, remote_id=bulk_key, status="Pending", phase="active",
                                              event={"run_id": session.run_id})
            else:
                conditions = spec.conditions
                body = client.create_co_job(namespace=spec.namespace, object=spec.object, operation=spec.operation,
                                            conditions=conditions, idempotency_key=key)
                takes_file = OPERATIONS[spec.operation].takes_file  # uploaded in a second step
                phase = "created" if takes_file else "active"
                job = ledger.record_submitted(job.id, remote_id=body["Id"], status=body["status"], phase=phase,
                                              event={"run_id": session.run_id})
                if takes_file:
                    body = client.upload_co_file(body["Id"], file or settings.root / spec.file,
                                                 idempotency_key=f"{key}-upload")
                    job = ledger.record_uploaded(job.id, status=body["status"], event={"run_id": session.run_id})
        session.close("ok")
    except BaseException:
        session.close("error")
        raise
    return job


def sandbox_admin(settings) -> httpx.Client:
    """An HTTP client on the repo's embedded sandbox tenant (admin API: clock, state)."""
    app = make_app(db_path=str(settings.sandbox_db))
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://sandbox.local")


def fail_in_tenant(settings, bulk_key: str) -> None:
    """Make a Pending mass action end Failed as a whole (Zuora refuses bad files at upload, so only a
    failure inside the tenant gets there)."""
    with sandbox_admin(settings) as admin:
        admin.post("/_sandbox/fail", json={"bulkKey": bulk_key, "message": "Zuora Finance is not enabled"}
                   ).raise_for_status()


def advance(settings, seconds: float) -> None:
    """Move the sandbox's clock forward, so its jobs progress."""
    with sandbox_admin(settings) as admin:
        admin.post("/_sandbox/clock", json={"advance_seconds": seconds}).raise_for_status()


def refresh(settings) -> None:
    """Fetch live status of every running job, recording it and archiving results, as apply --wait does."""
    session = Session(settings, command="apply")
    try:
        refresh_jobs(session)
    finally:
        session.close("ok")


def apply(settings) -> str:
    """One real `reconciler apply --auto-approve`; returns its output."""
    from reconciler.commands.apply import apply as run

    out = io.StringIO()
    assert run(settings, out, auto_approve=True) == 0, out.getvalue()
    return out.getvalue()


def applied(root: Path):
    """A repo whose specs were all applied and ran to the end on the sandbox; returns its Settings.

    The first apply submits the three specs without dependencies; once load-vehicles completed, the
    second submits the two that depend on it; the third records the end and archives the results.
    """
    settings = settings_of(make_repo(root))
    apply(settings)
    for _ in range(2):
        advance(settings, 3600)
        apply(settings)
    return settings


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes (a ledger that was only read keeps it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Tty(io.StringIO):
    """An output stream that says it is a terminal, as a real one would."""

    def isatty(self) -> bool:
        return True


def clean_environment(monkeypatch) -> None:
    """What conftest's autouse fixture does, for fixtures built before it runs (session scope)."""
    for var in list(os.environ):
        if var.startswith(("ZUORA_", "GITHUB_", "RECONCILER_")) or var in ("NO_COLOR", "CI"):
            monkeypatch.delenv(var, raising=False)


def cli(settings, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in the repo, as a user would."""
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=settings.root, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def state_files(settings) -> dict[str, str]:
    """Every file under the repo's state/ with its sha256: what a read must leave alone (the ledger, results,
    the sandbox aside; state/.cache holds only what spec validation remembers, which a read may write)."""
    base = settings.root / "state"
    if not base.exists():
        return {}
    return {p.relative_to(base).as_posix(): sha256_of(p) for p in sorted(base.rglob("*")) if p.is_file()
            and "sandbox" not in p.name and ".cache" not in p.relative_to(base).parts}


def blob(settings, ref: str) -> bytes | None:
    """An archived result's (or sent file's) bytes where the ledger keeps them: the file under state/, or a
    PostgreSQL ledger's blobs rows; None when there are none."""
    if settings.ledger_url is None:
        path = settings.root / ref
        return path.read_bytes() if path.exists() else None
    import psycopg

    with psycopg.connect(settings.ledger_url.url) as conn:
        parts = conn.execute("SELECT data FROM blobs WHERE ref = %s ORDER BY part", (ref,)).fetchall()
    return b"".join(bytes(p[0]) for p in parts) if parts else None


def set_blob(settings, ref: str, data: bytes | None) -> None:
    """Change (None: remove) an archived result or sent file where the ledger keeps it, as anyone who can
    write the file, or the database's table, could."""
    if settings.ledger_url is None:
        path = settings.root / ref
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    import psycopg

    with psycopg.connect(settings.ledger_url.url, autocommit=True) as conn:
        assert conn.execute("DELETE FROM blobs WHERE ref = %s", (ref,)).rowcount >= 1
        if data is not None:
            conn.execute("INSERT INTO blobs (ref, part, data) VALUES (%s, 0, %s)", (ref, data))
