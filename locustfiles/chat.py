"""Entry locustfile without a shape: the chat users and the plugin; works with -u/-r/-t, headless or the web UI.

locust -f locustfiles/chat.py --host http://127.0.0.1:8001 --auth-host http://127.0.0.1:8000
"""

from __future__ import annotations

import locust  # noqa: F401 - first: gevent monkey-patching before anything opens a socket

from locustfiles import plugin, sampling, webui  # noqa: F401 - their listeners register on import
from locustfiles.ratelimited import RateLimitedUser
from locustfiles.sseuser import SseChattingUser
from locustfiles.users import ChattingUser, MultiTabUser, ReconnectingUser, UploadingUser

__all__ = ["ChattingUser", "MultiTabUser", "RateLimitedUser", "ReconnectingUser", "SseChattingUser", "UploadingUser"]
