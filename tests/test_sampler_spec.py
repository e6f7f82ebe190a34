"""Source specs: every kind parsed, and every mistake a one-line message naming the spec."""

from __future__ import annotations

import pytest

from sampler import Sampler, SourceSpecError, parse_source
from sampler.spec import PromSelector, parse_services


def test_every_kind_parses():
    assert parse_source("pid:1234").target == "1234"
    assert parse_source("pid:self").target == "self"
    assert parse_source("port:08001").target == "8001"
    assert parse_source(r"cmd:uvicorn .*backend").target == r"uvicorn .*backend"
    assert parse_source("docker:chat-backend-1").kind == "docker"
    assert parse_source("redis:redis://127.0.0.1:6379/0").target == "redis://127.0.0.1:6379/0"
    pg = parse_source("postgres:postgresql+psycopg://postgres@127.0.0.1:5432/test#all")
    assert pg.target == "postgresql+psycopg://postgres@127.0.0.1:5432/test" and pg.all_databases
    assert parse_source("prometheus:http://127.0.0.1:8001/metrics").selectors == ()
    assert parse_source("health:https://chat.example.com/health").target == "https://chat.example.com/health"
    assert parse_source("tcp:db.internal:5432").target == "db.internal:5432"


def test_prometheus_mapping_with_labels_and_renames():
    spec = parse_source(
        'prometheus:http://cadvisor:8080/metrics#container_memory_working_set_bytes{name="backend",id="/a,b"}'
        "=mem_working_set_bytes, ws_connections_active ,pool:checked_out=db_pool_checked_out"
    )
    assert spec.target == "http://cadvisor:8080/metrics"
    assert spec.selectors == (
        PromSelector(
            "container_memory_working_set_bytes", (("id", "/a,b"), ("name", "backend")), "mem_working_set_bytes"
        ),
        PromSelector("ws_connections_active", (), "ws_connections_active"),
        PromSelector("pool:checked_out", (), "db_pool_checked_out"),
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("8001", "expected KIND:TARGET"),
        ("prt:8001", "KIND one of pid, port"),
        ("port:", "nothing after 'port:'"),
        ("port:70000", "between 1 and 65535"),
        ("pid:-3", "process id"),
        ("cmd:([", "not a valid regular expression"),
        ("redis:localhost:6379", "redis://, rediss://"),
        ("postgres:mysql://x", "postgresql:// URL"),
        ("postgres:postgresql://x/db#everything", "unknown option '#everything'"),
        ("prometheus:127.0.0.1:8001/metrics", "http:// or https://"),
        ("prometheus:http://x/metrics#a{b=c}=d", "labels must look like"),
        ("prometheus:http://x/metrics#=d", "mapping entry '=d'"),
    ],
)
def test_mistakes_are_one_line_and_name_the_spec(text, says):
    with pytest.raises(SourceSpecError) as info:
        parse_source(text)
    message = str(info.value)
    assert says in message and repr(text) in message and "\n" not in message


def test_services_are_checked_as_a_whole(tmp_path):
    with pytest.raises(SourceSpecError, match="service name 'bad name'"):
        parse_services({"bad name": "pid:1"})
    with pytest.raises(SourceSpecError, match="would both write its process metrics"):
        parse_services({"backend": ["port:8001", "pid:12"]})
    with pytest.raises(SourceSpecError, match="would both write its health"):
        parse_services({"backend": ["health:http://127.0.0.1:8001/health", "tcp:127.0.0.1:8001"]})
    with pytest.raises(SourceSpecError, match=r"service 'backend': source spec 'port:x'"):
        Sampler({"backend": ["port:x"]}, tmp_path)
    assert not (tmp_path / "samples.csv").exists()  # a bad spec is refused before anything is written
    assert parse_services({"backend": "port:8001"})["backend"][0].kind == "port"


@pytest.mark.parametrize(
    "spec",
    ["redis:redis://127.0.0.1:notaport/0", "prometheus:http://127.0.0.1:99999/metrics", "postgres:postgresql://a b"],
)
def test_urls_their_clients_refuse_are_refused_up_front(spec, tmp_path):
    with pytest.raises(SourceSpecError) as info:
        Sampler({"x": spec}, tmp_path)
    assert f"source spec {spec!r}" in str(info.value) and "\n" not in str(info.value)
