"""What a script on Zuora's official Python SDK does instead of reconciler: one create_mass_updater per file.

    python bench/sdkloop.py BASE_URL ACTION_TYPE FILE...

A sequential loop over `zuora_sdk` 3.21's MassUpdaterApi.create_mass_updater (the P2 comparison the
issue names): the SDK's ZuoraClient fetches the OAuth token, then one POST /v1/bulk per file, no
ledger, no retries of ours, no concurrency. Credentials come from ZUORA_CLIENT_ID /
ZUORA_CLIENT_SECRET. Prints {"import_seconds", "loop_seconds"}: importing the SDK builds its ~1,700
pydantic models (many seconds), which P2 leaves out so that the loop is compared, not the import.
Exits 1 if any upload is refused.
"""

import json
import os
import sys
import time

started = time.perf_counter()
from zuora_sdk import Configuration, MassUpdaterApi  # noqa: E402
from zuora_sdk.zuora_client import ZuoraClient  # noqa: E402

imported = time.perf_counter()


def main(base_url: str, action_type: str, files: list) -> int:
    client = ZuoraClient(os.environ["ZUORA_CLIENT_ID"], os.environ["ZUORA_CLIENT_SECRET"], None,
                         Configuration(host=base_url))
    client._auth()  # initialize() would also start its token-refresh timer thread, which a loop does not need
    api = MassUpdaterApi(client.api_client)
    params = json.dumps({"actionType": action_type})
    for path in files:
        answer = api.create_mass_updater(file=path, params=params)
        if not answer.success or not answer.bulk_key:
            print(f"{path}: {answer}", file=sys.stderr)
            return 1
    print(json.dumps({"import_seconds": imported - started, "loop_seconds": time.perf_counter() - imported}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
