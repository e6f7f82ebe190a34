"""The reference chat platform the suite loads by default: auth, backend and agent, each its own process.

Start it with ``soak sut`` or ``sut.launcher.start_sut``; the protocol is in sut/CONTRACT.md. It imports nothing
else of this repository, so it also runs alone (``python -m sut backend``, the Dockerfile).
"""
