"""The floor for reading a repo: one Python process that reads and sha256-hashes every file in it.

    python bench/floor.py ROOT

Hashes every file under ROOT except the state/ directory (the ledger is not an input of reading the
specs), in sorted order, and prints the file count and total bytes. Standard library only, so its
start-up is the bare interpreter's.
"""

import hashlib
import os
import sys


def main(root: str) -> int:
    files = total = 0
    for directory, subdirs, names in os.walk(root):
        if directory == root:
            subdirs[:] = [d for d in subdirs if d != "state"]
        subdirs.sort()
        for name in sorted(names):
            with open(os.path.join(directory, name), "rb") as fh:
                data = fh.read()
            hashlib.sha256(data).hexdigest()
            files += 1
            total += len(data)
    print(f"{files} files, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
