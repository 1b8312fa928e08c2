"""What a hand-written script does instead of reconciler: a token, then one POST /v1/bulk per file.

    python bench/handwritten.py BASE_URL ACTION_TYPE FILE...

A sequential loop of plain httpx calls (the P2 comparison): no ledger, no retries, no concurrency.
Credentials come from ZUORA_CLIENT_ID / ZUORA_CLIENT_SECRET. Exits 1 if any upload is refused.
"""

import json
import os
import sys

import httpx


def main(base_url: str, action_type: str, files: list) -> int:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        token = client.post("/oauth/token", data={
            "client_id": os.environ["ZUORA_CLIENT_ID"], "client_secret": os.environ["ZUORA_CLIENT_SECRET"],
            "grant_type": "client_credentials",
        }).raise_for_status().json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        for path in files:
            with open(path, "rb") as fh:
                response = client.post("/v1/bulk", headers=headers, files={"file": (os.path.basename(path), fh,
                                       "text/csv")}, data={"params": json.dumps({"actionType": action_type})})
            body = response.json()
            if response.status_code != 200 or not body.get("success"):
                print(f"{path}: {response.status_code} {body}", file=sys.stderr)
                return 1
    print(f"{len(files)} files submitted")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
