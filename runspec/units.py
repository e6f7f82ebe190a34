"""Units shared by every figure and label, so "MB/h" means one thing in the progress line, the web UI tab, the
verdict and the report."""

from __future__ import annotations

MB = 1024.0 * 1024.0  # one "MB" in every label is 2**20 bytes (what `docker stats` and Kubernetes call MiB)
HOUR = 3600.0
LOAD_GENERATOR = "locust"  # the service name the load generator samples itself under
