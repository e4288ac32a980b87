"""Typed settings.

Three layers, the later winning key by key:

1. the defaults written here (enough to run the demo: SQLite in the working folder,
   the mock network on loopback);
2. a TOML file — ``config/ehrfetch.toml`` in the working folder when it exists, or the
   file named by ``ehrfetch --config FILE``;
3. environment variables ``EHRFETCH__SECTION__KEY`` (``EHRFETCH__STORE__URL``).

Settings are read once at an entry point (CLI, flow, app factory) and passed down as
objects; nothing deeper reads the environment. Secrets are ``SecretStr`` so they never
print; the store's password is a separate secret so the URL can be shown and logged.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ehrfetch.errors import ConfigError

DEFAULT_CONFIG_FILE = Path("config/ehrfetch.toml")
ENV_PREFIX = "EHRFETCH__"


class _Section(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    url: str = "sqlite:///ehrfetch.db"
    """SQLAlchemy URL. Relative SQLite paths are relative to the working folder."""
    password: SecretStr | None = None
    """Database password, kept out of ``url`` so the URL can be shown."""
    echo: bool = False
    """Log every SQL statement (debugging only)."""
    threads: int = Field(default=2, ge=1, le=32)
    """Threads of a running batch that carry its store transactions, off the event loop
    (each holds one transaction at a time). Two, not asyncio's default ``min(32, cores +
    4)``: against a local PostgreSQL, fewer concurrent transactions cost the server less
    (docs/benchmarks.md, fifteenth session). More help only a store far enough away that
    two threads spend most of their time waiting on it."""
    pool_size: int | None = Field(default=None, ge=1, le=200)
    """Connections each process keeps open. None: one per store thread and two more.
    Past the pool, a connection is opened and closed for each transaction: a new
    PostgreSQL backend every time."""

    def connections(self) -> int:
        if self.pool_size is not None:
            return self.pool_size
        return self.threads + 2

    @field_validator("url")
    @classmethod
    def _parsable(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError("not a SQLAlchemy database URL") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError("only sqlite and postgresql stores are supported")
        return value

    def sqlalchemy_url(self) -> URL:
        url = make_url(self.url)
        if url.drivername == "postgresql":
            # psycopg 3 is the driver we ship and test; a bare "postgresql://" means the
            # dialect's default driver, which differs between SQLAlchemy releases.
            url = url.set(drivername="postgresql+psycopg")
        if self.password is not None:
            url = url.set(password=self.password.get_secret_value())
        return url

    def display_url(self) -> str:
        """The URL with any password masked: safe for logs and terminal output."""
        return self.sqlalchemy_url().render_as_string(hide_password=True)


class NetworkSettings(_Section):
    directory_url: str = "http://127.0.0.1:8900/directory"
    """The network directory (a Bundle of Organization and Endpoint)."""
    token_url: str = "http://127.0.0.1:8900/token"  # noqa: S105 (a URL, not a secret)
    client_id: str = "ehrfetch"
    private_key: SecretStr | None = None
    """PEM of the client's signing key (prefer ``private_key_file`` outside tests)."""
    private_key_file: Path | None = None
    purpose_of_use: Annotated[str, Field(pattern=r"^\S+$")] = "T-IAS"
    """Purpose of use declared when asking for a token (HL7 v3 PurposeOfUse code); also
    each Provenance's policy URI, so one word: checked here, not once per document."""
    scope: str = "system/Patient.read system/DocumentReference.read system/Binary.read"
    """Scopes asked for with each token (SMART backend services ``system/`` scopes)."""
    key_id: str | None = None
    """``kid`` header of the client assertion, for networks that hold several client keys."""
    assertion_lifetime_s: Annotated[int, Field(gt=0, le=300)] = 240
    """Lifetime of a signed client assertion; networks refuse more than 300 s."""
    token_refresh_margin_s: Annotated[float, Field(ge=0)] = 30.0
    """A cached token is replaced this long before it expires, so no call carries a token
    that expires in flight."""

    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Longest silence between two chunks of an answer."""
    write_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    pool_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Longest wait for a free connection from the pool."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    """Longest time for one try, start to last byte: a server trickling a body a byte at
    a time never trips the read timeout, this one it does."""
    max_body_bytes: Annotated[int, Field(gt=0)] = 20 * 1024 * 1024
    """Largest answer read; reading stops past it and the call fails as too large."""
    max_connections: Annotated[int, Field(gt=0)] = 32
    """Open connections per batch client, all organizations together."""
    max_keepalive_connections: Annotated[int, Field(ge=0)] = 16
    transport: Literal["httpx", "aiohttp"] = "aiohttp"
    """HTTP implementation under the httpx client: aiohttp's (through httpx-aiohttp; it
    costs 1.6-3.5x less client CPU per request, same errors and limits as seen from
    ehrfetch) or httpx's own. See docs/benchmarks.md and scripts/bench_transport.py."""
    user_agent: str = "ehrfetch/0.1"

    max_tries: Annotated[int, Field(ge=1, le=20)] = 5
    """Tries per call, the first included, for 429, 5xx and transport errors."""
    backoff_base_s: Annotated[float, Field(ge=0)] = 0.5
    """First backoff; each next one doubles, plus up to this much random jitter."""
    backoff_max_s: Annotated[float, Field(ge=0)] = 30.0
    """Longest backoff between two tries (``Retry-After`` aside)."""
    retry_after_max_s: Annotated[float, Field(ge=0)] = 120.0
    """Longest ``Retry-After`` honoured. A server asking for a longer pause gets it: the
    call fails at once instead of coming back early or holding the batch."""

    requests_per_second: Annotated[float, Field(gt=0)] = 20.0
    """Requests per second to each organization (and to the directory and token endpoint),
    kept under the network's limit so ehrfetch does not live on 429s."""
    burst: Annotated[int, Field(ge=1)] = 10
    """Requests an idle organization may receive at once before pacing starts."""
    org_requests_per_second: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    """Per-organization overrides of ``requests_per_second``, by organization id."""
    org_concurrency: Annotated[int, Field(ge=1)] = 8
    """Organizations queried at once when one participant is looked up everywhere."""
    page_size: Annotated[int, Field(ge=1, le=1000)] = 50
    """``_count`` asked for in DocumentReference searches."""
    max_pages: Annotated[int, Field(ge=1)] = 100
    """Pages followed in one DocumentReference search before giving up as a runaway."""


class RosterSettings(_Section):
    research_id_system: str = "urn:ehrfetch:research-id"
    """Identifier system that carries the research id in FHIR Patient NDJSON rosters."""
    default_region: Annotated[str, Field(min_length=2, max_length=2)] = "US"
    """Region for phone numbers written without a country code (ISO 3166 alpha-2)."""


class CohortSettings(_Section):
    consent_type: str = "ehr"
    """The consent type that allows ehrfetch to request a participant's records."""
    batch_size: Annotated[int, Field(gt=0, le=100_000)] = 250
    no_match_retry_days: Annotated[float, Field(ge=0)] = 30.0
    """A participant found nowhere is tried again after this many days."""


class AcquireSettings(_Section):
    participant_concurrency: Annotated[int, Field(ge=1, le=1000)] = 16
    """Participants of one batch looked up at once."""
    match_count: Annotated[int, Field(ge=1, le=50)] = 5
    """Candidates asked for from each organization's ``$match``."""
    retrieve_documents: bool = True
    """False: discover and decide only (a dry run of matching; the match benchmark)."""
    consent_max_age_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    """How old a batch's reading of who still consents may be when a participant's
    lookup begins: a participant withdrawn less than this before may still be looked
    up, never stored (every write re-checks under the participant's lock). One read a
    second for the batch's next participants (up to 1,000) instead of one per
    participant; 0: a fresh read for each."""


class OrchestrationSettings(_Section):
    """How runs are scheduled and how many batches run at once (``flows/``)."""

    batch_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    """Batches of one run acquired at once (each with its own client and connections)."""
    task_runner: Literal["threads", "processes"] = "threads"
    """Where those batches run: threads of the flow's process (one core's worth of Python
    between them) or processes of their own (every core; they share the pacing to the
    network's rates through files of the run). See docs/benchmarks.md."""
    batches_per_worker: Annotated[int, Field(ge=0)] = 8
    """With processes: a batch worker process is replaced by a fresh one after this many
    batches (0: never). A long run's worker grew by ~1 MB per 1,000 participants
    (what Python and the libraries keep after a batch); a fresh process costs a few
    seconds of start-up."""
    stale_after_minutes: Annotated[float, Field(ge=0)] = 15.0
    """A running batch without a heartbeat for this long is taken for dead (its process
    was killed) and is run again; keep it well above the slowest participant's time."""
    schedule_cron: str = "0 2 * * *"
    """When ``ehrfetch serve`` starts ``acquire-ehr`` (cron, in ``timezone``)."""
    timezone: str = "UTC"
    """IANA time zone of ``schedule_cron``."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    store: StoreSettings = StoreSettings()
    network: NetworkSettings = NetworkSettings()
    roster: RosterSettings = RosterSettings()
    cohort: CohortSettings = CohortSettings()
    acquire: AcquireSettings = AcquireSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments (see load_settings); listing the
        # environment first makes it win over them, key by key.
        return (env_settings, init_settings)


def load_settings(config_file: Path | None = None) -> Settings:
    """Read settings: defaults, then the TOML file, then ``EHRFETCH__…`` variables.

    ``config_file`` None means ``config/ehrfetch.toml`` if it exists, else defaults only.
    An explicitly named file must exist.
    """
    if config_file is None:
        data = _read_toml(DEFAULT_CONFIG_FILE) if DEFAULT_CONFIG_FILE.is_file() else {}
        source = DEFAULT_CONFIG_FILE
    else:
        if not config_file.is_file():
            raise ConfigError(f"{config_file}: settings file not found")
        data = _read_toml(config_file)
        source = config_file
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message carries "(at line N, column M)" and no values.
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _describe(exc: ValidationError, source: Path) -> str:
    # Never echo the offending value: it may be a secret.
    problems = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        env_name = ENV_PREFIX + "__".join(str(part).upper() for part in error["loc"])
        problems.append(f"{dotted}: {error['msg']} (set in {source} or {env_name})")
    return "invalid settings: " + "; ".join(problems)
