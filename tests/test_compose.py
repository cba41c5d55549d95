"""docker-compose.yml, Dockerfile and .dockerignore, checked by parsing them (no Docker here).

Plain tests: no database, no Django settings needed.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SETTINGS_FILE = ROOT / "project" / "settings.py"
CONF_FILE = ROOT / "backfills" / "conf.py"

EXPECTED_SERVICES = {"postgres", "temporal", "temporal-ui", "migrate", "web", "worker"}
APP_SERVICES = ("migrate", "web", "worker")
APP_ENV = {
    "DATABASE_URL": "postgres://postgres:postgres@postgres:5432/backfills",
    "TEMPORAL_ADDRESS": "temporal:7233",
    "TEMPORAL_UI_URL": "http://localhost:8080",
}
DEPENDS_ON_CONDITIONS = {
    "service_started",
    "service_healthy",
    "service_completed_successfully",
}
ENV_CALLS = {"env", "env.bool", "env.list", "env.db", "env.int", "env.float", "env.str"}


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict), "docker-compose.yml is not a mapping"
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either the mapping or the list syntax."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(key): value for key, value in raw.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Target service -> condition, from either the list or the mapping syntax."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def command_words(service: dict[str, Any]) -> list[str]:
    raw = service.get("command")
    if raw is None:
        return []
    return shlex.split(raw) if isinstance(raw, str) else [str(word) for word in raw]


def host_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host IP, host port) of every port a service publishes."""
    published: list[tuple[str, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if "published" in entry:
                published.append((entry.get("host_ip", ""), int(entry["published"])))
            continue
        mapping = str(entry).split("/", 1)[0]
        parts = mapping.rsplit(":", 2)
        if len(parts) == 3:
            published.append((parts[0], int(parts[1])))
        elif len(parts) == 2:
            published.append(("", int(parts[0])))
        # A lone container port is published on a random host port: no clash possible.
    return published


def volume_source(volume: str | dict[str, Any]) -> str:
    """Named volume or host path of a volume entry; "" for an anonymous volume."""
    if isinstance(volume, dict):
        return str(volume.get("source") or "")
    parts = str(volume).split(":")
    return parts[0] if len(parts) > 1 else ""


def volume_target(volume: str | dict[str, Any]) -> str:
    if isinstance(volume, dict):
        return str(volume.get("target") or "")
    parts = str(volume).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def duration_seconds(text: str) -> float:
    """A compose duration (`90s`, `1m30s`, `1h`, `500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def settings_env_reads() -> dict[str, bool]:
    """Every environment variable project/settings.py reads -> whether it has a default.

    Parsed with `ast` rather than a regex so that multi-line calls and defaults containing
    parentheses are read correctly.
    """
    reads: dict[str, bool] = {}
    for node in ast.walk(ast.parse(SETTINGS_FILE.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        if ast.unparse(node.func) not in ENV_CALLS:
            continue
        name = node.args[0]
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            has_default = len(node.args) > 1 or any(kw.arg == "default" for kw in node.keywords)
            reads[name.value] = reads.get(name.value, False) or has_default
    return reads


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with comments dropped and continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "Dockerfile ends with a line continuation"
    return instructions


def copy_sources(arguments: str) -> list[str]:
    """Source paths of a COPY instruction (flags such as --chown dropped)."""
    words = [word for word in shlex.split(arguments) if not word.startswith("--")]
    return words[:-1]


def dockerignore_patterns() -> list[str]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line.lstrip("/").rstrip("/"))
    return patterns


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `path` (or a folder holding it) out of the build context.

    Approximates Docker's rules (later `!` patterns re-include); `*` here may also match `/`,
    which only makes the check stricter.
    """
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern[1:] if negate else pattern
        candidates = [bare, bare.removeprefix("**/")]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates):
            excluded = not negate
    return excluded


# --- docker-compose.yml ----------------------------------------------------------------------


def test_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = EXPECTED_SERVICES - services.keys()
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_every_depends_on_target_exists_with_a_valid_condition(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert target != name, f"{name} depends on itself"
            assert condition in DEPENDS_ON_CONDITIONS, f"{name}: bad condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                restart = str(services[target].get("restart", "no"))
                assert restart == "no", (
                    f"{name} waits for {target} to complete, but {target} restarts ({restart})"
                )


def test_dependency_order(services: dict[str, dict[str, Any]]) -> None:
    assert depends_on(services["temporal"]).get("postgres") == "service_healthy"
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    for name in ("web", "worker"):
        needs = depends_on(services[name])
        assert needs.get("migrate") == "service_completed_successfully", name
        assert "temporal" in needs, f"{name} does not depend on temporal"


def test_postgres_service(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert str(postgres["image"]).split(":")[0] == "postgres"
    assert str(postgres["image"]).split(":")[1].startswith("15")
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))
    data_volumes = [
        volume_source(volume)
        for volume in postgres.get("volumes") or []
        if volume_target(volume) == "/var/lib/postgresql/data"
    ]
    assert data_volumes, "postgres keeps its data in no volume"
    assert not data_volumes[0].startswith((".", "/", "~")), "postgres data is not a named volume"


def test_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume_source(volume)
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source!r}"


def test_temporal_services(services: dict[str, dict[str, Any]]) -> None:
    temporal = services["temporal"]
    assert str(temporal["image"]).startswith("temporalio/auto-setup:")
    env = environment(temporal)
    assert env["DB"] == "postgres12"
    assert env["DB_PORT"] == "5432"
    assert env["POSTGRES_SEEDS"] in services, "POSTGRES_SEEDS does not name the postgres service"
    postgres_env = environment(services[env["POSTGRES_SEEDS"]])
    assert env["POSTGRES_USER"] == postgres_env["POSTGRES_USER"]
    assert env["POSTGRES_PWD"] == postgres_env["POSTGRES_PASSWORD"]
    assert any(port == 7233 for _, port in host_ports(temporal)), "7233 not published"

    ui = services["temporal-ui"]
    assert str(ui["image"]).startswith("temporalio/ui:")
    ui_env = environment(ui)
    assert ui_env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert ui_env["TEMPORAL_CORS_ORIGINS"] == "http://localhost:3000"
    assert "8080:8080" in [str(port) for port in ui.get("ports") or []]


def test_app_services_share_the_dockerfile_image_and_environment(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert "x-app" in compose, "no x-app extension field for the shared app settings"
    builds = []
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert build is not None, f"{name} is not built from the Dockerfile"
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, name
        builds.append((build, services[name].get("image")))
        env = environment(services[name])
        for key, value in APP_ENV.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}, expected {value!r}"
    assert all(pair == builds[0] for pair in builds), "app services differ in build/image"
    assert environment(services["web"]) == environment(services["worker"])
    assert environment(services["web"]) == environment(services["migrate"])


def test_app_urls_point_at_the_services(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["web"])
    database = urlsplit(env["DATABASE_URL"])
    assert database.hostname in services and database.hostname == "postgres"
    postgres_env = environment(services["postgres"])
    assert database.username == postgres_env["POSTGRES_USER"]
    assert database.password == postgres_env["POSTGRES_PASSWORD"]
    assert database.path.lstrip("/") == postgres_env["POSTGRES_DB"]
    assert database.port == 5432

    host, _, port = env["TEMPORAL_ADDRESS"].partition(":")
    assert host in services and str(services[host]["image"]).startswith("temporalio/auto-setup")
    assert port == "7233"

    ui_url = urlsplit(env["TEMPORAL_UI_URL"])
    assert ui_url.hostname == "localhost"
    assert ("", ui_url.port) in host_ports(services["temporal-ui"]), (
        "TEMPORAL_UI_URL is not the port temporal-ui publishes on the host"
    )


def test_environment_values_are_strings(services: dict[str, dict[str, Any]]) -> None:
    # Unquoted `true` or `5432` would reach YAML as bool/int; keep every value a string.
    for name, service in services.items():
        for key, value in environment(service).items():
            assert isinstance(value, str), f"{name}: {key} is {value!r}, quote it"


def test_settings_env_parsing_finds_the_known_variables() -> None:
    reads = settings_env_reads()
    for name in (
        "DATABASE_URL",
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "BACKFILLS_TASK_QUEUE",
        "TEMPORAL_UI_URL",
        "DJANGO_SECRET_KEY",
        "DJANGO_DEBUG",
        "DJANGO_ALLOWED_HOSTS",
    ):
        assert name in reads, f"{name} not found among the settings' env reads"


def test_every_required_setting_is_provided(services: dict[str, dict[str, Any]]) -> None:
    required = {name for name, has_default in settings_env_reads().items() if not has_default}
    for name in APP_SERVICES:
        missing = required - environment(services[name]).keys()
        assert not missing, f"{name} lacks required settings {sorted(missing)}"


def test_app_environment_sets_only_variables_the_settings_read(
    services: dict[str, dict[str, Any]],
) -> None:
    # A misspelt name would be silently ignored and the default used instead.
    reads = settings_env_reads()
    unknown = environment(services["web"]).keys() - reads.keys()
    assert not unknown, f"x-app sets variables project/settings.py never reads: {sorted(unknown)}"


def test_no_host_port_is_published_twice(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for name, service in services.items():
        for ip, port in host_ports(service):
            for (other_ip, other_port), owner in seen.items():
                clash = port == other_port and (ip == other_ip or "" in (ip, other_ip))
                assert not clash, f"host port {port} published by both {owner} and {name}"
            seen[(ip, port)] = name


def test_web_serves_on_port_8000(services: dict[str, dict[str, Any]]) -> None:
    web = services["web"]
    words = command_words(web)
    assert words[:3] == ["python", "manage.py", "runserver"], words
    assert "0.0.0.0:8000" in words
    assert any(port == 8000 for _, port in host_ports(web))


def test_migrate_runs_migrations_then_seeds(services: dict[str, dict[str, Any]]) -> None:
    script = " ".join(command_words(services["migrate"]))
    migrate_at = script.find("manage.py migrate")
    seed_at = script.find("manage.py seed_comments")
    assert migrate_at != -1 and seed_at != -1, script
    assert migrate_at < seed_at, "seed_comments runs before migrate"
    assert "&&" in script[migrate_at:seed_at], "seeding does not wait for migrate to succeed"
    assert "--if-empty" in script, "seeding again on every start would duplicate the data"


def test_worker_runs_the_backfill_worker_and_stops_gracefully(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    words = command_words(worker)
    assert words == ["python", "manage.py", "run_backfill_worker"], (
        f"worker command {words}: run the worker directly (no shell) so SIGTERM reaches it"
    )
    assert str(worker.get("stop_signal", "SIGTERM")) in {"SIGTERM", "SIGINT"}
    assert "stop_grace_period" in worker, "worker has no stop_grace_period"
    grace = duration_seconds(str(worker["stop_grace_period"]))

    # Docker must wait longer than the worker waits for its batches to commit.
    env = environment(worker)
    if "BACKFILLS_GRACEFUL_SHUTDOWN_TIMEOUT" in env:
        shutdown = float(env["BACKFILLS_GRACEFUL_SHUTDOWN_TIMEOUT"])
    else:
        found = re.search(
            r'"BACKFILLS_GRACEFUL_SHUTDOWN_TIMEOUT",\s*([\d_.]+)\)', CONF_FILE.read_text()
        )
        assert found, "default BACKFILLS_GRACEFUL_SHUTDOWN_TIMEOUT not found in backfills/conf.py"
        shutdown = float(found.group(1).replace("_", ""))
    assert grace > shutdown, f"stop_grace_period {grace}s <= graceful shutdown {shutdown}s"


# --- Dockerfile and .dockerignore ------------------------------------------------------------


def test_dockerfile_base_image_and_environment() -> None:
    instructions = dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms and froms[0].split()[0] == "python:3.11-slim", froms
    env_text = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED[= ]1\b", env_text), "PYTHONUNBUFFERED=1 not set"


def test_dockerfile_installs_requirements_before_copying_the_code() -> None:
    instructions = dockerfile_instructions()
    copy_requirements = install = copy_code = None
    for index, (keyword, args) in enumerate(instructions):
        if keyword == "COPY" and "requirements.txt" in copy_sources(args):
            copy_requirements = index if copy_requirements is None else copy_requirements
        elif keyword == "RUN" and re.search(r"pip install\b.*-r\s+\S*requirements\.txt", args):
            install = index if install is None else install
        elif keyword == "COPY" and copy_code is None:
            copy_code = index
    assert copy_requirements is not None, "requirements.txt is never copied"
    assert install is not None, "requirements.txt is never pip-installed"
    assert copy_code is not None, "the project code is never copied"
    assert copy_requirements < install < copy_code, (
        "copy requirements.txt and install it before copying the code (layer cache)"
    )


def test_dockerfile_copies_existing_files_and_every_local_app() -> None:
    patterns = dockerignore_patterns()
    copied: set[str] = set()
    for keyword, args in dockerfile_instructions():
        if keyword in {"COPY", "ADD"}:
            if "--from=" in args:
                continue
            for source in copy_sources(args):
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source!r}"
                assert not ignored(source, patterns), f".dockerignore excludes {source!r}"
                copied.add(Path(source).parts[0] if source not in {".", "./"} else ".")
    tree = ast.parse(SETTINGS_FILE.read_text())
    apps = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "INSTALLED_APPS" for t in node.targets)
    )
    needed = {"manage.py", "project"} | {
        app.split(".")[0] for app in apps if (ROOT / app.split(".")[0]).is_dir()
    }
    missing = needed - copied
    assert "." in copied or not missing, f"the image lacks {sorted(missing)}"


def test_dockerfile_runs_as_a_non_root_user_with_runserver_by_default() -> None:
    instructions = dockerfile_instructions()
    users = [(index, args) for index, (word, args) in enumerate(instructions) if word == "USER"]
    assert users, "the image runs as root"
    last_user = users[-1][1].split(":")[0]
    assert last_user not in {"root", "0"}, "the image runs as root"
    cmds = [(index, args) for index, (word, args) in enumerate(instructions) if word == "CMD"]
    assert cmds, "no default CMD"
    assert users[-1][0] < cmds[-1][0]
    command = cmds[-1][1]
    assert command.startswith("["), "CMD in shell form: /bin/sh would swallow SIGTERM"
    assert yaml.safe_load(command) == ["python", "manage.py", "runserver", "0.0.0.0:8000"]


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".git", "var", "test-artifacts", "backfills/__pycache__", ".ruff_cache"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"
    for path in ("requirements.txt", "manage.py", "backfills/models.py"):
        assert not ignored(path, patterns), f".dockerignore excludes {path}"


def test_the_legacy_source_database_is_created_and_migrated(
    services: dict[str, dict[str, Any]],
) -> None:
    source_url = environment(services["worker"])["SOURCE_DATABASE_URL"]
    database = source_url.rsplit("/", 1)[1]
    mounts = [
        volume_source(volume)
        for volume in services["postgres"].get("volumes", [])
        if volume_target(volume) == "/docker-entrypoint-initdb.d"
    ]
    assert len(mounts) == 1, "postgres must run an init script that creates the second database"
    scripts = " ".join(path.read_text() for path in (ROOT / mounts[0]).glob("*.sql"))
    assert f"CREATE DATABASE {database};" in scripts
    assert "migrate --database legacy" in " ".join(command_words(services["migrate"]))
