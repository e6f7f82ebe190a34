"""Postgres as a service: client connections from ``pg_stat_activity``, by state and by application.

Counted for the database named in the URL (``#all``: every database), leaving out the sampler's own connection.
Every state is written every tick (0 included) so a drained pool shows as a fall to 0, not as a series that stops;
an application seen once keeps being written (0 when it has no connection left).
"""

from __future__ import annotations

import re

import psycopg

from sampler.sources import Source, Tick
from sampler.spec import SourceSpec

PG_TIMEOUT = 2  # seconds: connect timeout and statement timeout
MAX_APPLICATIONS = 20  # beyond this many distinct application names the rest are counted as "other"
STATES = {
    "active": "pg_connections_active",
    "idle": "pg_connections_idle",
    "idle in transaction": "pg_connections_idle_in_transaction",
    "idle in transaction (aborted)": "pg_connections_idle_in_transaction_aborted",
}
QUERY = """
SELECT coalesce(state, ''), coalesce(application_name, ''), count(*)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() {where}
GROUP BY 1, 2
"""


class PostgresSource(Source):
    def __init__(self, service: str, spec: SourceSpec) -> None:
        super().__init__(service, spec)
        self.url = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", spec.target)
        try:
            psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.Error as exc:
            raise ValueError(str(exc).splitlines()[0]) from None
        self.query = QUERY.format(where="" if spec.all_databases else "AND datname = current_database()")
        self._conn: psycopg.Connection | None = None
        self._apps: set[str] = set()

    def read(self, tick: Tick) -> dict[str, float]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=PG_TIMEOUT,
                application_name="soak-sampler",
                options=f"-c statement_timeout={PG_TIMEOUT * 1000}",
            )
        try:
            rows = self._conn.execute(self.query).fetchall()
        except psycopg.Error:
            self._conn.close()  # reconnect next tick
            raise
        return self.from_rows(rows)

    def from_rows(self, rows: list[tuple[str, str, int]]) -> dict[str, float]:
        out = {"pg_connections": 0.0, **dict.fromkeys(STATES.values(), 0.0), "pg_connections_other": 0.0}
        apps: dict[str, float] = {}
        for state, application, count in rows:
            out["pg_connections"] += count
            out[STATES.get(state, "pg_connections_other")] += count
            name = app_metric(application)
            if name not in self._apps and len(self._apps) >= MAX_APPLICATIONS:
                name = "pg_connections_app_other"
            self._apps.add(name)
            apps[name] = apps.get(name, 0.0) + count
        for name in self._apps:
            out[name] = apps.get(name, 0.0)
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def app_metric(application: str) -> str:
    """``pg_connections_app_<name>``, the name reduced to letters, digits and '_' (empty: ``unnamed``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", application).strip("_").lower()[:40]
    return f"pg_connections_app_{cleaned or 'unnamed'}"
