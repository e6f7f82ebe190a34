"""The sampler as a Locust plugin on the master (placeholder: owned by the integration work, issue 6)."""
