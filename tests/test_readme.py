"""What the README shows works as typed: the in-process publish() program runs as it is
(only the environment's name changed, to one of this test's), and every command its command
line section lists exists with the options it names."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import click
import pytest

from integration.cli import main
from integration.store.db import SessionMaker
from tests.outbound_support import Streams, outbox
from tests.processes import ROOT

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    return README[start : README.index("\n## ", start + 1)]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


async def test_the_publish_program_runs_as_written(
    streams: Streams, env_vars: dict[str, str], sessions: SessionMaker
) -> None:
    env = await streams()
    # The first program of the section: the in-process publish() (later ones use Segment's
    # own libraries through the /v1 intake, which tests/test_intake.py drives).
    program = code_blocks(section("Publishing product events"), "python")[0]
    assert '"production"' in program
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        program.replace('"production"', f'"{env.name}"'),
        cwd=ROOT,
        env={**os.environ, **env_vars},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert "'queued': 1" in out.decode(), out.decode()
    rows = await outbox(sessions, env.id)
    assert [r.payload["event"] for r in rows if "userId" in r.payload] == ["Flow Started"]


def _commands() -> list[tuple[list[str], list[str]]]:
    """(command path, options) of each `segment-integration ...` line the section lists."""
    [block] = code_blocks(section("Command line"), "sh")
    found = []
    for line in block.splitlines():
        if not line.startswith("segment-integration "):
            continue
        words = line.split("#")[0].split()[1:]
        path = [w for w in words if re.fullmatch(r"[a-z][a-z-]*", w)][:2]
        options = re.findall(r"--[a-z][a-z-]*", line.split("#")[0])
        found.append((path, options))
    return found


@pytest.mark.parametrize(("path", "options"), _commands(), ids=lambda v: " ".join(v))
def test_every_listed_command_exists_with_its_options(path: list[str], options: list[str]) -> None:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group) and name in command.commands, path
        command = command.commands[name]
    known = {opt for p in command.params for opt in p.opts} | {"--help"}
    assert set(options) <= known, (path, set(options) - known)
