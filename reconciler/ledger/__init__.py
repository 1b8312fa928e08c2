"""The ledger: the store of bulk keys, job ids, runs and the hash-chained audit events."""
