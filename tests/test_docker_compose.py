"""docker-compose.yml and the Dockerfile, correct by construction (issues #11.9, #15.10): every
command they run is one the CLI has, every variable they give our processes is a setting,
every secret comes from the .env file the README has users create (no defaults), the API is
published on loopback, the image is pinned and runs as a user of its own.

No container runs here (see the report of the change that added this: no registry and no
container runtime on the test machines), so this reads the files."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from functools import cache
from typing import Any

import yaml

from integration.config import Settings
from tests.outbound_support import running_worker
from tests.processes import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
OUR_IMAGE = "segment-integration:local"
# Variables the compose file uses that are not settings of ours: the postgres and redis
# images' own, and where the API is published. Each is described in .env.example.
COMPOSE_ONLY = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "REDISCLI_AUTH", "PGPASSWORD"}
INTERPOLATED_ONLY = {
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "API_BIND",
    "API_PORT",
    "FORWARDED_ALLOW_IPS",
    "DATABASE_HOST",
}
# Read by uvicorn itself, not by our settings.
UVICORN = {"FORWARDED_ALLOW_IPS"}
SECRETS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "ADMIN_TOKEN", "SECRET_KEY"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def ours() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image") == OUR_IMAGE
    }


@cache
def cli_help(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "integration", *args, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def subcommands() -> set[str]:
    section = cli_help().split("Commands:", 1)[1]
    return {line.split()[0] for line in section.splitlines() if line.strip()}


def dockerfile_cmd() -> list[str]:
    [cmd] = re.findall(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.M)
    parsed: list[str] = yaml.safe_load(cmd)
    return parsed


def test_every_command_run_is_one_the_cli_has() -> None:
    commands = [service["command"] for service in ours().values()] + [dockerfile_cmd()]
    assert {"migrate", "serve", "worker"} <= {c[3] for c in commands}
    for command in commands:
        assert command[:3] == ["python", "-m", "integration"], command
        sub, options = command[3], [a for a in command[4:] if a.startswith("--")]
        assert sub in subcommands(), f"{sub!r} is not a command of the CLI"
        for option in options:
            assert option in cli_help(sub), f"{sub} has no option {option}"


def test_every_variable_given_to_our_processes_is_a_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for name, service in ours().items():
        unknown = set(service["environment"]) - settings - UVICORN
        assert not unknown, f"{name}: {unknown} are not settings of integration.config"
    for name, service in compose()["services"].items():
        if name not in ours():
            unknown = set(service.get("environment", {})) - COMPOSE_ONLY
            assert not unknown, f"{name}: {unknown} are neither ours nor known compose-only"


def test_secrets_come_from_the_env_file_without_defaults() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used <= set(example), f"not in .env.example: {used - set(example)}"
    assert used - INTERPOLATED_ONLY <= {n.upper() for n in Settings.model_fields}
    for name in SECRETS:
        assert example[name] == "", f".env.example ships a value for {name}"
        # Required (`:?`), never a default (`:-`), wherever the compose file uses it.
        uses = re.findall(r"\$\{" + name + r"(:[?-])?", text)
        assert uses and set(uses) == {":?"}, f"{name} must be required: {uses}"
    assert "integration:integration@" not in text and "POSTGRES_PASSWORD: integration" not in text
    redis = compose()["services"]["redis"]
    assert "--requirepass" in redis["command"]
    for service in ours().values():
        assert "${REDIS_PASSWORD" in service["environment"]["REDIS_URL"]
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and ".env" in (ROOT / ".dockerignore").read_text().splitlines()
    assert "cp .env.example .env" in (ROOT / "README.md").read_text()


def test_the_api_is_published_on_loopback_and_checked_for_health() -> None:
    api = compose()["services"]["api"]
    [port] = api["ports"]
    bind = re.fullmatch(r"\$\{API_BIND:-([^}]+)\}:\$\{API_PORT:-8000\}:8000", port)
    assert bind and bind.group(1) == "127.0.0.1", port
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    for name in ("api", "worker"):
        assert compose()["services"][name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    for name in ("postgres", "redis"):
        assert "healthcheck" in compose()["services"][name]
        assert re.fullmatch(r"\w+:\d+(\.\d+)+", compose()["services"][name]["image"])


def test_the_image_is_pinned_locked_and_not_root() -> None:
    text = DOCKERFILE.read_text()
    [base] = re.findall(r"^FROM (\S+)", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), base
    assert "--require-hashes" in text and "requirements/runtime.lock" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users


def test_the_worker_is_checked_for_health_by_a_command_it_has() -> None:
    worker = compose()["services"]["worker"]
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:] == ["python", "-m", "integration", "worker", "--check"]
    assert "--check" in cli_help("worker")
    assert worker["healthcheck"]["interval"] == "15s"  # the key lives 11 s, recorded every 10


async def test_the_worker_health_check_sees_a_running_worker(env_vars: dict[str, str]) -> None:
    """What the healthcheck runs, against a real worker: 1 before it starts, 0 once it runs."""
    queue = {"ARQ_QUEUE_NAME": f"integration:health:{uuid.uuid4().hex[:8]}"}

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "integration", "worker", "--check"],
            cwd=ROOT,
            env={**os.environ, **env_vars, **queue},
            capture_output=True,
            text=True,
            timeout=30,
        )

    before = await asyncio.to_thread(check)
    assert before.returncode == 1, before
    assert "no worker of this machine recorded its health" in before.stderr
    async with running_worker(env_vars, **queue):
        deadline = time.monotonic() + 30
        while (done := await asyncio.to_thread(check)).returncode != 0:
            assert time.monotonic() < deadline, done
            await asyncio.sleep(0.5)
        assert done.stdout.strip() == "the worker runs"


def test_the_api_believes_x_forwarded_for_from_the_host_proxy_only() -> None:
    # A proxy on the host reaches the API from the compose network's gateway: trusting that
    # one address gives each caller its own failure budget (issue #20.3), and no other.
    [network] = compose()["networks"]["default"]["ipam"]["config"]
    trusted = re.fullmatch(
        r"\$\{FORWARDED_ALLOW_IPS:-([^}]+)\}", ours()["api"]["environment"]["FORWARDED_ALLOW_IPS"]
    )
    assert trusted and trusted.group(1) == network["gateway"]
    assert "FORWARDED_ALLOW_IPS=" + network["gateway"] in ENV_EXAMPLE.read_text()
    assert network["gateway"] in (ROOT / "README.md").read_text()


def test_the_citus_profile_is_a_coordinator_and_two_workers_that_migrate_waits_for() -> None:
    """`docker compose --profile citus up` (README, "Running at scale"): Citus's official image,
    pinned, for a coordinator and two workers with their own volumes; a one-shot service adds
    the workers to the coordinator before `migrate` distributes the schema; the processes reach
    the coordinator when .env says DATABASE_HOST=citus-coordinator."""
    services = compose()["services"]
    citus = {name: s for name, s in services.items() if "citus" in s.get("profiles", [])}
    assert set(citus) == {"citus-coordinator", "citus-worker-1", "citus-worker-2", "citus-setup"}
    for name, service in citus.items():
        assert re.fullmatch(r"citusdata/citus:\d+\.\d+\.\d+", service["image"]), name
        assert service["environment"]["POSTGRES_DB"] == "integration"
    for node in ("citus-coordinator", "citus-worker-1", "citus-worker-2"):
        [volume] = citus[node]["volumes"]
        assert volume == f"{node}:/var/lib/postgresql/data" and node in compose()["volumes"]
        assert "healthcheck" in citus[node]
    setup = citus["citus-setup"]
    sql = " ".join(setup["command"])
    assert "--host=citus-coordinator" in sql and "ON_ERROR_STOP=1" in sql
    assert "citus_set_coordinator_host('citus-coordinator', 5432)" in sql
    for worker in ("citus-worker-1", "citus-worker-2"):
        assert f"citus_add_node('{worker}', 5432)" in sql
        assert setup["depends_on"][worker] == {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"]["citus-setup"] == {
        "condition": "service_completed_successfully",
        "required": False,  # the default profile has no citus-setup to wait for
    }
    for service in ours().values():
        assert (
            "@${DATABASE_HOST:-postgres}:5432/integration" in service["environment"]["DATABASE_URL"]
        )
    readme = (ROOT / "README.md").read_text()
    assert "docker compose --profile citus up" in readme
    assert "DATABASE_HOST=citus-coordinator" in readme
