"""Naming precedence over the fixture /proc tree tests/fixtures/proc/host (one pid per scenario;
see build_host_tree.py) and the Docker answers captured from the real engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostagent.identity.cgroup import parse_cgroup
from hostagent.identity.docker import ContainerInfo, DockerMetadata
from hostagent.identity.interpreters import program_name, runtime_name
from hostagent.identity.naming import (
    IdentityConfigError,
    NameDecision,
    decide_name,
    parse_resource_attributes,
    parse_service_rules,
)
from hostagent.identity.procfs import ProcFS
from tests.support.docker_engine import ReplayDockerClient

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
PROCFS = ProcFS(str(FIXTURES / "host"), clock_ticks=100)


def docker() -> DockerMetadata:
    return DockerMetadata(ReplayDockerClient(str(FIXTURES / "docker")))


def decide(
    pid: int, rules: Optional[list[Any]] = None, metadata: Optional[DockerMetadata] = None
) -> NameDecision:
    proc = PROCFS.process_info(pid)
    cgroup = parse_cgroup(proc.cgroup_text)
    container: Optional[ContainerInfo] = None
    if cgroup.container_id:
        container = (metadata or docker()).get(cgroup.container_id)
    return decide_name(rules or [], proc, container, cgroup)


PRECEDENCE = [
    # (pid, expected name, namespace, rule) -- see build_host_tree.SCENARIOS for each process
    (100, "nginx", None, "systemd_unit"),  # nginx.service, argv[0] rewritten by nginx
    (101, "orders", None, "OTEL_SERVICE_NAME"),  # beats its unit shop-api.service
    (102, "billing", "fin ops", "OTEL_RESOURCE_ATTRIBUTES"),  # percent-decoded namespace
    (103, "syncthing", None, "systemd_unit"),  # a user unit under user@1000.service
    (104, "manage.py", None, "executable"),  # session-3.scope is not a service name
    (105, "demo", None, "systemd_unit"),  # hybrid layout: name=systemd hierarchy
    (106, "checkout", "shop", "compose"),  # compose label + project, cgroup v1 /docker/<id>
    (107, "hostagent-id-plain", None, "container_name"),  # no labels; v2 docker-<id>.scope
    (108, "nginx", None, "executable"),  # podman: no Docker answer, and no unit name in a container
    (109, "orders-service", None, "executable"),  # CRI-O, java -jar
    (110, "server.js", None, "executable"),  # containerd, node with --require
    (111, "com.example.billing.Main", None, "executable"),  # java main class
    (112, "http.server", None, "executable"),  # python -m
    (113, "gunicorn", None, "executable"),  # shebang script in a venv, in a session scope
    (114, "rails", None, "executable"),
    (115, "mon.pl", None, "executable"),
    (116, "artisan", None, "executable"),
    (118, "worker", None, "systemd_unit"),  # template instance worker@3.service
    (119, "foo-bar", None, "systemd_unit"),  # \x2d unescaped
    (120, "ignored-by-config", None, "OTEL_SERVICE_NAME"),  # (a config rule overrides, below)
    (121, "kworker/0:1", None, "executable"),  # kernel thread: no exe, no cmdline -> comm
    (122, "cart", "shop", "OTEL_SERVICE_NAME"),  # process env beats the compose label
    (123, "foo", None, "executable"),  # exe "(deleted)" suffix dropped
    (124, "inventory", None, "OTEL_SERVICE_NAME"),  # from the container's configured Env
    (125, "conmon", None, "executable"),  # libpod-conmon scope: not a container, not a service
    (14938, "checkout", "shop", "compose"),  # a real container process captured verbatim
]


@pytest.mark.parametrize(
    ("pid", "name", "namespace", "rule"), PRECEDENCE, ids=[str(p[0]) for p in PRECEDENCE]
)
def test_precedence(pid: int, name: str, namespace: Optional[str], rule: str) -> None:
    assert decide(pid) == NameDecision(name, namespace, rule)


def test_container_without_docker_answer_falls_back_to_program_not_unit() -> None:
    """Docker down: the v2 scope docker-<id>.scope must not become the name."""
    metadata = DockerMetadata(ReplayDockerClient(str(FIXTURES / "docker"), available=False))
    assert decide(107, metadata=metadata) == NameDecision("sleep", None, "executable")


RULES_TOML = [
    {"name": "legacy-billing", "namespace": "finance", "exe": "/opt/legacy/*"},
    {"name": "web", "systemd_unit": "nginx"},
    {"name": "shop-frontend", "label": "com.docker.compose.service=check*", "image": "hostagent-bb:latest"},
    {"name": "django", "cmdline": r"manage\.py\s+runserver", "exe": "python3*"},
    {"name": "never", "container_name": "hostagent-id-plain", "exe": "/usr/sbin/*"},  # both must match
]


@pytest.mark.parametrize(
    ("pid", "expected"),
    [
        (120, NameDecision("legacy-billing", "finance", "config")),  # beats OTEL_SERVICE_NAME
        (100, NameDecision("web", None, "config")),  # systemd_unit matches without ".service"
        (106, NameDecision("shop-frontend", "shop", "config")),  # label glob + image:tag
        (122, NameDecision("shop-frontend", "shop", "config")),  # beats the process's OTEL_SERVICE_NAME
        (104, NameDecision("django", None, "config")),  # exe glob on the basename + cmdline regex
        (107, NameDecision("hostagent-id-plain", None, "container_name")),  # rule 5 needs both matchers
        (101, NameDecision("orders", None, "OTEL_SERVICE_NAME")),  # no rule matches
    ],
)
def test_config_rules_override_everything(pid: int, expected: NameDecision) -> None:
    rules = parse_service_rules(RULES_TOML, "/etc/hostagent/config.toml")
    assert decide(pid, rules) == expected


def test_first_matching_rule_wins() -> None:
    rules = parse_service_rules(
        [{"name": "a", "exe": "nginx"}, {"name": "b", "exe": "/usr/sbin/nginx"}], "c.toml"
    )
    assert decide(100, rules).name == "a"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"exe": "x"}], "c.toml: services[0].name: required"),
        ([{"name": "x"}], "c.toml: services[0]: expected at least one matcher"),
        (
            [{"name": "x", "exe": "a"}, {"name": "y", "cmdline": "("}],
            "c.toml: services[1].cmdline: expected a valid",
        ),
        (
            [{"name": "x", "label": "novalue"}],
            "c.toml: services[0].label: expected \"key=value\", got 'novalue'",
        ),
        ([{"name": "x", "exe": "a", "colour": "red"}], "c.toml: services[0].colour: unknown key"),
        ([{"name": "x", "exe": 3}], "c.toml: services[0].exe: expected a non-empty string, got 3"),
        ([{"name": "", "exe": "a"}], "c.toml: services[0].name: expected a non-empty string"),
        (["nope"], "c.toml: services[0]: expected a table, got 'nope'"),
        ({"name": "x"}, "c.toml: services: expected an array of tables"),
    ],
)
def test_parse_service_rules_errors(raw: Any, message: str) -> None:
    with pytest.raises(IdentityConfigError) as info:
        parse_service_rules(raw, "c.toml")
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("exe", "argv", "name"),
    [
        ("/usr/bin/python3.11", ("python3", "manage.py", "runserver"), "manage.py"),
        ("/usr/bin/python3.11", ("python3", "-m", "gunicorn", "app:app"), "gunicorn"),
        ("/usr/bin/python3.11", ("python3", "-mcelery", "worker"), "celery"),
        ("/usr/bin/python3.11", ("python3", "-W", "ignore", "-X", "dev", "/srv/app/main.py"), "main.py"),
        ("/usr/bin/python3.11", ("python3", "-c", "print(1)"), "python3.11"),
        ("/usr/bin/python3.11", ("python3",), "python3.11"),
        ("/usr/bin/pypy3", ("pypy3", "run.py"), "run.py"),
        ("/usr/bin/java", ("java", "-jar", "/opt/app.jar"), "app"),
        ("/usr/bin/java", ("java", "-cp", "a.jar:b.jar", "-Dx=y", "org.acme.Main", "arg"), "org.acme.Main"),
        ("/usr/bin/java", ("java", "-m", "acme.app/org.acme.Main"), "org.acme.Main"),
        ("/usr/bin/node", ("node", "-r", "dotenv/config", "dist/index.js"), "index.js"),
        ("/usr/bin/node", ("node", "-e", "1"), "node"),
        ("/usr/bin/ruby3.1", ("ruby", "-e", "puts 1"), "ruby3.1"),
        ("/usr/bin/perl", ("perl", "-I", "/lib", "tool.pl"), "tool.pl"),
        ("/usr/bin/php8.2", ("php", "-S", "127.0.0.1:8000"), "php8.2"),
        ("/bin/busybox", ("httpd", "-f"), "httpd"),
        ("/bin/busybox", ("busybox", "httpd"), "busybox"),
        ("/usr/sbin/nginx", ("nginx: worker process",), "nginx"),
        ("", (), "comm-name"),
        ("", ("/usr/bin/thing", "--x"), "thing"),
    ],
)
def test_program_name(exe: str, argv: tuple[str, ...], name: str) -> None:
    assert program_name(exe, argv, "comm-name") == name


@pytest.mark.parametrize(
    ("exe", "argv", "comm", "name"),
    [
        # Debian: /usr/bin/redis-server -> redis-check-rdb; redis retitles argv[0]
        ("/usr/bin/redis-check-rdb", ("redis-server 127.0.0.1:6379", "", ""), "redis-server", "redis-server"),
        ("/usr/bin/redis-check-rdb", ("redis-check-rdb", "dump.rdb"), "redis-check-rd", "redis-check-rdb"),
        ("/usr/bin/mariadb", ("mysql", "-h", "db"), "mysql", "mysql"),
        # a name longer than the kernel keeps for comm (15 bytes)
        ("/opt/bin/payments-v2", ("/usr/local/bin/payments-gateway", "--port", "80"), "payments-gatewa",
         "payments-gateway"),
        # not a link: the task renamed itself, or argv[0] was rewritten to something else
        ("/usr/sbin/nginx", ("nginx: worker process",), "nginx", "nginx"),
        ("/usr/lib/postgresql/15/bin/postgres", ("postgres: checkpointer ",), "postgres", "postgres"),
        ("/usr/bin/app", ("app",), "worker-3", "app"),
        ("/usr/bin/app", ("other",), "worker-3", "app"),
        # interpreters keep their own rules (python3 -> python3.11 is a link too)
        ("/usr/bin/python3.11", ("python3", "manage.py"), "python3", "manage.py"),
        ("/usr/bin/python3.11", ("python3", "-c", "1"), "python3", "python3.11"),
    ],
)
def test_program_name_started_through_a_link(exe: str, argv: tuple[str, ...], comm: str, name: str) -> None:
    assert program_name(exe, argv, comm) == name


@pytest.mark.parametrize(
    ("exe_name", "runtime"),
    [
        ("python3.11", "cpython"),
        ("python3", "cpython"),
        ("pypy3", "pypy"),
        ("java", "java"),
        ("node", "nodejs"),
        ("nodejs", "nodejs"),
        ("ruby3.1", "ruby"),
        ("perl5.36.0", "perl"),
        ("php8.2", "php"),
        ("nginx", None),
        ("pythonista", None),
    ],
)
def test_runtime_name(exe_name: str, runtime: Optional[str]) -> None:
    assert runtime_name(exe_name) == runtime


@pytest.mark.parametrize(
    ("value", "attrs"),
    [
        ("service.name=a,service.namespace=b", {"service.name": "a", "service.namespace": "b"}),
        ("service.name=a%2Cb, k = v ", {"service.name": "a,b", "k": "v"}),
        ("garbage,=x,k=", {"k": ""}),
        ("", {}),
    ],
)
def test_parse_resource_attributes(value: str, attrs: dict[str, str]) -> None:
    assert parse_resource_attributes(value) == attrs


@given(st.text(max_size=100), st.lists(st.text(max_size=30), max_size=8), st.text(max_size=20))
def test_program_name_never_raises(exe: str, argv: list[str], comm: str) -> None:
    assert isinstance(program_name(exe, tuple(argv), comm), str)


ACCEPT = ProcFS(str(FIXTURES / "accept"), clock_ticks=100)


def decide_superserved(pid: int, unit: Optional[str] = None, exe: Optional[str] = None) -> NameDecision:
    """A process of fixtures/proc/accept (a real systemd Accept=yes socket and a real inetd), its
    unit or executable changed to try the other superservers."""
    proc = ACCEPT.process_info(pid)
    if unit is not None:
        proc = replace(proc, cgroup_text=f"0::/system.slice/{unit}\n")
    if exe is not None:
        proc = replace(proc, exe=exe, cmdline=(exe,), comm=exe.rsplit("/", 1)[-1])
    return decide_name([], proc, None, parse_cgroup(proc.cgroup_text))


@pytest.mark.parametrize(
    ("pid", "unit", "exe", "decision"),
    [
        # systemd (init.scope: a scope names nobody): the launcher of hello.socket
        (7655, None, None, NameDecision("systemd", None, "executable")),
        # hello@0-127.0.0.1:22081-127.0.0.1:55334.service: an Accept=yes connection's own unit
        (7826, None, None, NameDecision("hello", None, "systemd_unit")),
        # inetd in inetd.service, and the python3 it forked and ran for a connection (same unit)
        (7822, None, None, NameDecision("inetd", None, "systemd_unit")),
        (7828, None, None, NameDecision("hello.py", None, "executable")),
        # the same under the other superservers' units
        (7828, "xinetd.service", None, NameDecision("hello.py", None, "executable")),
        (7822, "xinetd.service", "/usr/sbin/xinetd", NameDecision("xinetd", None, "systemd_unit")),
        (7828, "openbsd-inetd.service", "/bin/cat", NameDecision("cat", None, "executable")),
        (7822, "inetutils-inetd.service", "/usr/sbin/inetutils-inetd", NameDecision("inetutils-inetd", None,
                                                                                   "systemd_unit")),
        # any other unit still names all of its processes
        (7828, "web.service", None, NameDecision("web", None, "systemd_unit")),
    ],
)
def test_superserved_processes(pid: int, unit: Optional[str], exe: Optional[str], decision: NameDecision) -> None:
    assert decide_superserved(pid, unit, exe) == decision
