"""Redis Cluster URLs: accepted wherever a Redis URL is, taken apart exactly, and never printed with their password."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import parse_url

from digitstream.settings import SettingsError, is_cluster_url, load_settings, parse_cluster_url, redact


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:7000",
        "redis+cluster://redis-node-3",
        "redis+cluster://127.0.0.1:7000/0",
        "redis+cluster://127.0.0.1:7000/",
        "rediss+cluster://app:s3cret@redis.internal:7000?ssl_cert_reqs=none",
        "redis+cluster://:s3cret@10.0.0.5:7000,10.0.0.6:7001,[::1]:7002",
        "redis+cluster://app@node-1?db=0",
    ],
)
def test_a_cluster_url_is_a_valid_redis_url_setting(url: str) -> None:
    settings = load_settings(redis_url=url)
    assert settings.redis_url.get_secret_value() == url
    assert is_cluster_url(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://node:7000/3", "only database 0: remove '/3'"),
        ("redis+cluster://node:7000?db=2", "only database 0: remove the db query parameter"),
        ("redis+cluster://", "needs at least one host[:port]"),
        ("redis+cluster://user:pw@", "needs at least one host[:port]"),
        ("redis+cluster://node:0", "'node:0' is not host[:port] with a port 1-65535"),
        ("redis+cluster://node:65536", "'node:65536' is not host[:port]"),
        ("redis+cluster://node:70x", "'node:70x' is not host[:port]"),
        ("redis+cluster://a:7000,,b:7000", "'' is not host[:port]"),
        ("cluster://node:7000", "must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"),
    ],
)
def test_a_bad_cluster_url_is_refused_saying_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(SettingsError, match="DIGITSTREAM_REDIS_URL") as error:
        load_settings(redis_url=url)
    assert says in str(error.value)


def test_the_default_port_is_6379_and_every_node_is_kept_in_order() -> None:
    found = parse_cluster_url("rediss+cluster://app:pw@node-1,node-2:7001,[fd00::7]:7002/0?ssl_cert_reqs=none")
    assert found.nodes == (("node-1", 6379), ("node-2", 7001), ("fd00::7", 7002))
    assert found.node_url == "rediss://app:pw@node-1:6379?ssl_cert_reqs=none"
    assert found.tls


hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
nodes = st.lists(st.tuples(hosts, st.integers(1, 65535)), min_size=1, max_size=5)
secrets = st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s)
users = st.from_regex(r"[A-Za-z0-9_.-]{0,12}", fullmatch=True)


def _netloc(nodes: list[tuple[str, int]]) -> str:
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in nodes)


@given(nodes=nodes, user=users, password=secrets, tls=st.booleans())
def test_the_node_url_hands_redis_py_the_first_node_and_the_credentials_unchanged(
    nodes: list[tuple[str, int]], user: str, password: str, tls: bool
) -> None:
    scheme = "rediss+cluster" if tls else "redis+cluster"
    url = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{_netloc(nodes)}"
    found = parse_cluster_url(url)
    assert found.nodes == tuple(nodes)
    assert found.tls == tls
    options = parse_url(found.node_url)  # what redis-py's cluster clients do with it
    assert (options["host"], options["port"]) == nodes[0]
    assert options.get("username") == (user or None)
    assert options["password"] == password
    assert ("connection_class" in options) == tls  # the SSL connection class for rediss://


@given(nodes=nodes, user=users, password=secrets, scheme=st.sampled_from(["redis+cluster", "rediss+cluster", "redis"]))
def test_redact_replaces_exactly_the_password(
    nodes: list[tuple[str, int]], user: str, password: str, scheme: str
) -> None:
    netloc = _netloc(nodes if "cluster" in scheme else nodes[:1])
    url = f"{scheme}://{user}:{quote(password, safe='')}@{netloc}/0?ssl_cert_reqs=none"
    assert redact(url) == f"{scheme}://{user}:***@{netloc}/0?ssl_cert_reqs=none"
    assert redact(f"{scheme}://{netloc}") == f"{scheme}://{netloc}"  # nothing to hide: unchanged


@given(password=secrets)
def test_redact_hides_a_password_given_as_a_query_parameter(password: str) -> None:
    url = f"redis+cluster://node-1:7000?password={quote(password, safe='')}&ssl_cert_reqs=none"
    assert redact(url) == "redis+cluster://node-1:7000?password=***&ssl_cert_reqs=none"


@given(password=secrets.filter(lambda s: len(s) >= 4))
def test_a_refused_cluster_url_never_shows_its_password(password: str) -> None:
    marker = "PW" + quote(password, safe="")
    with pytest.raises(SettingsError) as error:
        load_settings(redis_url=f"redis+cluster://app:{marker}@node-1:7000/5")
    assert marker not in str(error.value)
