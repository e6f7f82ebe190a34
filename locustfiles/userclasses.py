"""Which of our user classes run, with what weight and pace: the scenario's [users.<Class>] tables applied to the
classes of users.py and sseuser.py. ``configure`` is called from the init event (also on workers, and again at test
start).
"""

from __future__ import annotations

from typing import Any

from locust import between, constant

from locustfiles import options
from locustfiles.ratelimited import RateLimitedUser
from locustfiles.sseuser import SseChattingUser
from locustfiles.users import (
    ChattingUser,
    ChatUser,
    MultiTabUser,
    ReconnectingUser,
    UploadingUser,
)
from runspec import ScenarioError
from runspec.scenario import USER_CLASSES as CLASS_NAMES

USERS = (ChattingUser, MultiTabUser, UploadingUser, RateLimitedUser, ReconnectingUser)


def user_classes() -> dict[str, type[ChatUser]]:
    """The schema's class names, each a class of ours (a name without its class fails at the first configure)."""
    ours = {cls.__name__: cls for cls in (*USERS, SseChattingUser)}
    return {name: ours[name] for name in CLASS_NAMES}


def configure(environment: Any, settings: options.Settings, drop_unweighted: bool) -> None:
    """Weights and think times from the scenario; with ``drop_unweighted`` classes of weight 0 never spawn.

    A class named on Locust's command line (``locust -f chat.py MultiTabUser``) runs even where the scenario, or the
    default scenario (ChattingUser only), gives it no weight: the command line is the more specific wish.
    """
    named = set(getattr(environment.parsed_options, "user_classes", None) or [])
    classes = user_classes()
    for name, cls in classes.items():
        table = settings.users.get(name)
        cls.weight = table["weight"] if table else 0
        if name in named:
            cls.weight = max(cls.weight, 1)
        cfg = settings.user(name)
        if cls is ChattingUser and settings.scenario["arrival"]["rate"] > 0:
            cls.wait_time = constant(0)  # the open model's schedule is the pace (arrival.py)
        elif cfg["wait_max"] > 0:
            cls.wait_time = between(cfg["wait_min"], cfg["wait_max"])
        else:
            cls.wait_time = constant(0)
    if drop_unweighted:
        ours = set(classes.values())
        kept = [cls for cls in environment.user_classes if cls not in ours or cls.weight > 0 or cls.fixed_count]
        if not kept:
            raise ScenarioError("no user class to run: every class has weight 0 in the scenario")
        environment.user_classes[:] = kept
