"""Specs: from the files of a spec repository to the validated desired state, every problem located.

load.py reads the YAML and drives the checks; schema.py judges each document against the JSON Schema;
rules.py holds the rules between fields and documents and the fingerprints; datafiles.py reads the data
files and columns.py checks their rows against the registry in reconciler/actions.py.
"""
