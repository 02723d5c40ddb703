"""The command line, `segment-integration` (also `python -m integration`): the processes
(serve, worker, migrate, run) and a command for every admin action, each calling the same
service as the admin API.

One module per command group. Each command imports what it runs inside its own function:
importing the whole application takes about 2 s, and `--help`, `--version` or a typo should
not pay for a server they do not start (tests/test_layout.py allows this here only).

Settings: the environment, then the runtime.env of a running `make run`, found from any folder
(integration/cli/instance.py says how); `--data-dir` names one.
"""

from __future__ import annotations

import click

from integration import __version__
from integration.cli.api_keys import api_keys
from integration.cli.common import escape_output
from integration.cli.deliveries import deliveries
from integration.cli.env import env
from integration.cli.mappings import mappings
from integration.cli.messages import messages
from integration.cli.plans import plans
from integration.cli.server import migrate, run, secret_key, serve, worker
from integration.cli.stats import deletions, stats
from integration.cli.users import users

SERVERS = ("serve", "worker", "run")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="segment-integration")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="The data folder of the `make run` to talk to (DATA_DIR). By default: ./.data if a"
    " run serves from it, else the one running `make run` of this user.",
)
@click.pass_context
def main(ctx: click.Context, data_dir: str | None) -> None:
    """A bidirectional Segment integration: Webhooks destination in, HTTP API source out.

    Environments are named by their name (or id) in every command."""
    if ctx.invoked_subcommand not in SERVERS:  # their logs are JSON, and a hot path
        escape_output()


for command in (
    serve,
    worker,
    migrate,
    run,
    env,
    api_keys,
    deliveries,
    messages,
    mappings,
    users,
    stats,
    deletions,
    plans,
):
    main.add_command(command)
main.add_command(secret_key)
