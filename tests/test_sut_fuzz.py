"""Bad input: schemathesis against the OpenAPI of auth and backend finds no 500; garbage WebSocket frames get an
error event and the connection lives on."""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from sut.client import Client
from sut.launcher import SutConfig, start_sut

EXAMPLES = 150  # per service and mode; a 2-core CI machine shares its time with everyone's tests
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True
)


@pytest.fixture(scope="module")
def sut(tmp_path_factory):
    # uploads small, limits off: the fuzzer must reach the handlers, not the rate limiter
    config = SutConfig(agent_step=0.0, rate_limit=0, upload_max_bytes=10_000)
    with start_sut(config, log_dir=tmp_path_factory.mktemp("sut-fuzz")) as running:
        yield running


@pytest.fixture(scope="module")
def client(sut) -> Client:
    user = Client(sut.urls["auth"], sut.urls["backend"])
    user.login()
    return user


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize("service", ["auth", "backend"])
def test_no_generated_request_gets_a_server_error(sut, client, service, mode):
    base = sut.urls[service]
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    session = requests.Session()
    failures: list[str] = []
    statuses: dict[int, int] = {}

    @FUZZ_SETTINGS
    @given(case=schema.as_strategy(generation_mode=mode))
    def call(case) -> None:
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {client.access_token}"  # a real user, so the handlers are reached
        response = case.call(base_url=base, session=session, headers=headers, timeout=10)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500 and response.status_code != 503:
            failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} {response.text[:200]}")

    call()
    assert failures == []
    assert sum(statuses.values()) >= EXAMPLES // 2, statuses  # it really sent requests
    print(service, mode.value, sorted(statuses.items()))
    assert requests.get(base + "/health", timeout=5).status_code == 200  # and it is still standing


GARBAGE = st.one_of(
    st.text(max_size=200),  # mostly not JSON at all
    st.binary(max_size=200),  # binary frames
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20), st.lists, max_leaves=5)
    .filter(lambda v: not isinstance(v, dict))
    .map(json.dumps),  # JSON, but not an object
    st.fixed_dictionaries(
        {"type": st.text(max_size=30).filter(lambda t: t not in ("chat_message", "refresh_token", "ping"))},
        optional={"id": st.integers() | st.text(max_size=10), "content": st.text(max_size=10)},
    ).map(json.dumps),  # an object of an unknown type
    st.fixed_dictionaries(
        {"type": st.just("chat_message")},
        optional={
            "content": st.none() | st.integers() | st.just("") | st.lists(st.text(max_size=3)),
            "thread_id": st.text(min_size=1, max_size=5).filter(lambda t: not t.isdigit())
            | st.floats()
            | st.booleans(),
            "id": st.lists(st.integers(), max_size=2) | st.text(min_size=201, max_size=210),
        },
    ).map(json.dumps),  # a chat message with bad fields
)


def test_garbage_frames_get_an_error_event_and_the_connection_survives(client):
    tab = client.tab()
    sent: list = []

    @FUZZ_SETTINGS
    @given(frame=GARBAGE)
    def send(frame) -> None:
        if isinstance(frame, bytes):
            tab.ws.send_binary(frame)
        else:
            tab.ws.send(frame)
        answer = tab.recv(5)
        assert answer["type"] == "error", (frame, answer)
        assert answer["code"] in ("BAD_MESSAGE", "UNKNOWN_TYPE", "UNKNOWN_THREAD"), (frame, answer)
        tab.send({"type": "ping", "id": "alive?"})
        pong = tab.recv(5)
        assert (pong["type"], pong["reply_to"]) == ("pong", "alive?")
        sent.append(frame)

    send()
    assert len(sent) >= EXAMPLES // 2
    msg = tab.chat("still works after all that")
    assert tab.until_type("agent_completed", msg)[0]["type"] == "ack"
    tab.close()
