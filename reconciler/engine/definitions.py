"""Fetch the tenant's custom object definitions into the repo (`reconciler definitions pull`).

Reads only: GET /objects/definitions/default for every object, or GET /objects/definitions/default/{object}
for those named. Nothing touches the ledger. The files are spec.definitions' to write; `validate` checks the
custom object jobs against them from then on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reconciler.errors import RemoteError, UsageError
from reconciler.spec import definitions as repo_definitions
from reconciler.zuora.client import ZuoraClient

NAMESPACE = "default"  # the only namespace the definitions API serves


def pull(settings, objects: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Write the definitions of `objects` (all of the tenant's when empty); (repo path, what happened) for each.

    Pulling all also removes the files of objects the tenant no longer defines ("removed")."""
    names = list(dict.fromkeys(o.strip() for o in objects))
    bad = [n for n in names if not repo_definitions.OBJECT_NAME.match(n)]
    if bad:
        raise UsageError(f"{bad[0]!r} is not a custom object API name (letters, digits and _, as in vehicle)")
    root = Path(settings.root)
    with ZuoraClient.from_settings(settings) as client:
        client.authenticate()
        fetched = {name: _one(client, name, settings) for name in names} if names else _all(client, settings)
    outcome = []
    for name, body in sorted(fetched.items()):
        if not repo_definitions.OBJECT_NAME.match(name):
            continue  # not a name a file can carry; Zuora's own rules make this unreachable
        status = repo_definitions.write(root, NAMESPACE, name, body)
        outcome.append((_rel(repo_definitions.path_of(root, NAMESPACE, name), root), status))
    if not names:
        folder = root / repo_definitions.DIRECTORY / NAMESPACE
        for stale in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if stale.stem not in fetched:
                stale.unlink()
                outcome.append((_rel(stale, root), "removed"))
    return outcome


def _one(client: ZuoraClient, name: str, settings) -> dict:
    try:
        return client.get_co_definition(name)
    except RemoteError as err:
        if err.status == 404:
            raise UsageError(f"{settings.environment} has no custom object {name!r} (API names are case-sensitive; "
                             "`reconciler definitions pull` without a name fetches every one)") from None
        raise _explained(err) from None


def _all(client: ZuoraClient, settings) -> dict:
    try:
        return client.list_co_definitions()
    except RemoteError as err:
        raise _explained(err) from None


def _explained(err: RemoteError) -> RemoteError:
    if err.status == 403:
        return RemoteError(f"{err.remote_message}; reading definitions needs the API user's View Custom Objects "
                           "permission", status=err.status, code=err.code, request_id=err.request_id,
                           endpoint=err.endpoint)
    return err


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
