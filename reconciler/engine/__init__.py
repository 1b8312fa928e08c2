"""The engine: plan (pure), apply, and everything a run does between a spec and the ledger."""
