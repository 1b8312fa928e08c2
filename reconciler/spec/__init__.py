"""Specs: loading YAML, the JSON Schema, the rules between fields, and the checks on data files."""
