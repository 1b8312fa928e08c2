"""The Zuora client: one HTTP session, OAuth, retries, and the two bulk APIs' operations."""
