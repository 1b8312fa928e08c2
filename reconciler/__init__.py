"""reconciler: a declarative, GitOps-style reconciler for Zuora bulk operations."""

__version__ = "0.1.0"
