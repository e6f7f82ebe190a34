"""The live service tab of the Locust web UI (placeholder: owned by the integration work, issue 6)."""
