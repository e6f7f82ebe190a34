"""A "Services" tab in the Locust web UI: each sampled service's current memory, connections and pool gauges,
and its memory slope so far, refreshed with the stats every 2 s while a test runs; and, for a run whose replies may
stream, a "Tokens" tab: time to first token, token gaps and stalls so far (tokentab.py; fed by plugin.py).

The rows come from servicetab.py (no Locust there, so they are tested in any process); the leak column from the run
folder's ``early.json``, which the runner's early verdict writes (the analysis never runs in the load generator).

Locust's UI renders ``extended_tabs``/``extended_tables`` from its template args and fills them from an
``extended_stats`` list in the ``/stats/requests`` JSON (see Locust's examples/extend_web_ui.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from locust import events

from locustfiles import options, sampling, tokentab
from locustfiles.plugin import live_tokens
from locustfiles.servicetab import COLUMNS, service_rows
from runspec import folder

TAB_KEY = "soak-services"
TOKENS_KEY = "soak-tokens"


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    web_ui = environment.web_ui
    if web_ui is None:
        return
    from flask import request

    settings = options.apply(environment.parsed_options)
    tabs = [{"title": "Services", "key": TAB_KEY}]
    tables = [{"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}]
    # a tab for streamed tokens only where replies may stream: none for a run that cannot have any
    tokens = tokentab.may_stream(settings.scenario, described=settings.scenario_path != "<defaults>")
    if tokens:
        tabs.append({"title": "Tokens", "key": TOKENS_KEY})
        tables.append({"key": TOKENS_KEY, "structure": [{"key": key, "title": t} for key, t in tokentab.COLUMNS]})
    web_ui.template_args["extended_tabs"] = tabs
    web_ui.template_args["extended_tables"] = tables

    @web_ui.app.after_request
    def _add_service_stats(response: Any) -> Any:
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        plugin = sampling.PLUGIN
        rows = []
        if plugin is not None:
            rows = service_rows(plugin.latest(), plugin.trend, time.time(), _early(plugin.run_dir / folder.EARLY))
        payload = response.get_json(silent=True) or {}
        payload["extended_stats"] = [{"key": TAB_KEY, "data": rows}]
        if tokens:
            token_data = tokentab.token_rows(live_tokens, options.current.scenario, time.time())
            payload["extended_stats"].append({"key": TOKENS_KEY, "data": token_data})
        response.set_data(json.dumps(payload))
        return response


def _early(path: Any) -> list[dict[str, Any]] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("verdicts")
    except (OSError, ValueError, AttributeError):
        return None  # no look yet, or a file from another tool
