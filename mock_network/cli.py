"""`python -m mock_network serve | roster | keygen`."""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from mock_network.config import NetworkConfig, load_config, without_faults

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The mock care-coordination network (tests, demos, benchmarks).",
)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="mock network TOML config", exists=True, dir_okay=False),
]


@cli.command()
def serve(
    config: ConfigOption = Path("config/mock_network.toml"),
    host: Annotated[str, typer.Option(help="bind address (keep it on loopback)")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8900,
    log_level: Annotated[str, typer.Option()] = "info",
    access_log: Annotated[bool, typer.Option(help="log every request line (ids only)")] = False,
    no_faults: Annotated[
        bool, typer.Option(help="turn every fault, delay and rate limit off")
    ] = False,
    population_size: Annotated[
        int | None, typer.Option(help="override [population] size (100 .. 1,000,000)")
    ] = None,
) -> None:
    """Run the network under uvicorn (one worker, uvloop + httptools)."""
    import uvicorn

    from mock_network.app import create_app

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    began = time.perf_counter()
    network_config = load_config(config)
    if no_faults:
        network_config = without_faults(network_config)
    if population_size is not None:
        population = network_config.population.model_copy(update={"size": population_size})
        network_config = network_config.model_copy(update={"population": population})
        network_config = NetworkConfig.model_validate(network_config.model_dump())  # bounds
    app = create_app(network_config)
    # The population index lives as long as the process: frozen, it is out of the cyclic
    # collector's sight, so full collections walk only what requests make; and young
    # collections run less often (ehrfetch.heap's reasons; this stand-in does not import
    # ehrfetch). 4 % of the network's CPU went to the collector in a 10,000 benchmark.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    # An injected dropped connection is not a server error: keep its traceback out of the log.
    logging.getLogger("uvicorn.error").addFilter(_not_injected)
    logging.getLogger("mock_network").info("app built in %.2f s", time.perf_counter() - began)
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=2,
        log_config=None,
    )


def _not_injected(record: logging.LogRecord) -> bool:
    from mock_network.faults import DroppedConnection

    return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


@cli.command()
def roster(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="folder for roster.csv, consents.csv, truth.ndjson")
    ],
    config: ConfigOption = Path("config/mock_network.toml"),
    size: Annotated[int | None, typer.Option(help="participants (default: [roster] size)")] = None,
) -> None:
    """Write a cohort roster, its consents and the truth file."""
    from mock_network.roster import write_roster

    summary = write_roster(load_config(config), out, size=size)
    typer.echo(
        json.dumps(
            {
                "participants": summary.participants,
                "known_nowhere": summary.known_nowhere,
                "hard_cases": summary.hard_cases,
                "withdrawn": summary.withdrawn,
                "declined": summary.declined,
                "ehr_on_file": summary.ehr_on_file,
                "files": [str(path) for path in summary.files],
            },
            indent=2,
        )
    )


@cli.command()
def keygen(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="where to write the key pair")],
    name: Annotated[str, typer.Option(help="file name stem")] = "client",
    algorithm: Annotated[str, typer.Option(help="ES256 or RS384")] = "ES256",
) -> None:
    """Make a client key pair: NAME.key.pem (private, for the client) and NAME.pub.pem +
    NAME.jwks.json (public, for the network's [[clients]] entry)."""
    from mock_network.keys import write_key_pair

    paths = write_key_pair(out_dir, name, algorithm)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))


def main() -> None:
    cli()
