"""The sandbox's documented default OAuth client, importable without loading the simulator.

A client pointed at a loopback sandbox needs only these two strings; importing them from here (the
package __init__ loads the rest lazily) keeps `apply` against a served sandbox from importing the app.
"""

DEFAULT_CLIENT_ID = "reconciler-local-sandbox-client-0001"
DEFAULT_CLIENT_SECRET = "reconciler-local-sandbox-secret"
