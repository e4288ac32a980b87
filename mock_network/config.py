"""Typed configuration of the mock network, loaded from TOML or built in code by tests.

Everything the network does that a test may want to change lives here: the population
(seed, size, how many organizations know a person), the member organizations with their
faults, the registered clients with their public keys and allowed purposes of use, token
lifetimes, and whether a test may force a fault with a request header.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Fault names, as used in the config's `[orgs.faults]` tables and in the forced-fault
#: header. The first group can hit any organization endpoint; the second only JSON
#: answers; the third only document references and their attachments.
REQUEST_FAULTS: tuple[str, ...] = (
    "rate_limited",  # 429 with Retry-After
    "server_error",  # 500
    "bad_gateway",  # 502
    "service_unavailable",  # 503 with Retry-After
    "dropped_connection",  # headers, part of the body, then the connection closes
    "hang",  # no answer for `hang_seconds`
    "truncated_body",  # a well-formed HTTP answer whose body is cut short
)
BODY_FAULTS: tuple[str, ...] = (
    "malformed_json",  # not JSON at all
    "invalid_fhir",  # JSON, but not a valid FHIR resource
)
DOCUMENT_FAULTS: tuple[str, ...] = (
    "wrong_hash",  # DocumentReference declares a hash the bytes do not have
    "wrong_size",  # ... a size the bytes do not have
    "wrong_patient",  # the attachment is about another patient
    "foreign_host",  # the attachment URL is on a host that is not the organization's
    "oversized",  # the attachment is far larger than any sane size cap
    "looping_next",  # the next link of a page points back to the first page
)
ALL_FAULTS: tuple[str, ...] = REQUEST_FAULTS + BODY_FAULTS + DOCUMENT_FAULTS

FORCED_FAULT_HEADER = "X-Mock-Fault"


class _Model(BaseModel):
    # Typos in a config file must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatencyConfig(_Model):
    """Added delay before each organization answer: a log-normal with the given median and
    99th percentile (the usual shape of service latency), or nothing when median is 0;
    ``min_ms``/``max_ms`` clip it (a WAN profile: "200-800 ms")."""

    median_ms: float = Field(default=0.0, ge=0)
    p99_ms: float = Field(default=0.0, ge=0)
    min_ms: float = Field(default=0.0, ge=0)
    max_ms: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _p99_not_below_median(self) -> LatencyConfig:
        if self.p99_ms and self.p99_ms < self.median_ms:
            raise ValueError("latency p99_ms must be >= median_ms")
        if self.max_ms is not None and self.max_ms < self.min_ms:
            raise ValueError("latency max_ms must be >= min_ms")
        return self


class FaultRates(_Model):
    """Probability of each fault. Request and body faults are drawn per request (at most
    one request fault per request); document faults are fixed per document, so the
    reference and its attachment always tell the same story."""

    rate_limited: float = Field(default=0.0, ge=0, le=1)
    server_error: float = Field(default=0.0, ge=0, le=1)
    bad_gateway: float = Field(default=0.0, ge=0, le=1)
    service_unavailable: float = Field(default=0.0, ge=0, le=1)
    dropped_connection: float = Field(default=0.0, ge=0, le=1)
    hang: float = Field(default=0.0, ge=0, le=1)
    truncated_body: float = Field(default=0.0, ge=0, le=1)
    malformed_json: float = Field(default=0.0, ge=0, le=1)
    invalid_fhir: float = Field(default=0.0, ge=0, le=1)
    wrong_hash: float = Field(default=0.0, ge=0, le=1)
    wrong_size: float = Field(default=0.0, ge=0, le=1)
    wrong_patient: float = Field(default=0.0, ge=0, le=1)
    foreign_host: float = Field(default=0.0, ge=0, le=1)
    oversized: float = Field(default=0.0, ge=0, le=1)
    looping_next: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _request_faults_fit(self) -> FaultRates:
        if sum(getattr(self, name) for name in REQUEST_FAULTS) > 1.0:
            raise ValueError("the request fault rates add up to more than 1")
        if sum(getattr(self, name) for name in BODY_FAULTS) > 1.0:
            raise ValueError("the body fault rates add up to more than 1")
        return self

    def rate(self, name: str) -> float:
        return float(getattr(self, name))


class RateLimit(_Model):
    """Token bucket per (client, organization): `per_second` sustained, `burst` at once.
    0 turns the limit off."""

    per_second: float = Field(default=0.0, ge=0)
    burst: int = Field(default=20, ge=1)


class OrgConfig(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    name: str
    #: Two-letter state the organization is in: people are mostly known near home.
    state: str = Field(pattern=r"^[A-Z]{2}$")
    latency: LatencyConfig = LatencyConfig()
    faults: FaultRates = FaultRates()
    rate_limit: RateLimit = RateLimit()
    #: How noisy this organization's registration desk is (multiplies every record-noise rate).
    noise: float = Field(default=1.0, ge=0, le=5)
    #: Purposes of use this organization answers for; None: every purpose the network knows.
    purposes: tuple[str, ...] | None = None


class ClientConfig(_Model):
    """A client registered with the network. Its public key comes from exactly one of an
    inline PEM, a PEM file or a JWKS file; files are read at each token request (cached by
    modification time), so a demo can write its key pair after the network has started."""

    client_id: str = Field(min_length=1)
    public_key_pem: str | None = None
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    allowed_purposes: tuple[str, ...] = ("T-IAS",)

    @model_validator(mode="after")
    def _one_key_source(self) -> ClientConfig:
        sources = [self.public_key_pem, self.public_key_file, self.jwks_file]
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                f"client {self.client_id!r}: give exactly one of public_key_pem, "
                "public_key_file, jwks_file"
            )
        return self


class AuthConfig(_Model):
    token_lifetime_s: int = Field(default=300, ge=1)
    #: Longest accepted client-assertion lifetime (exp - iat), per SMART backend services.
    max_assertion_lifetime_s: int = Field(default=300, ge=1, le=300)
    #: Tolerated clock skew when checking iat/exp/nbf.
    leeway_s: int = Field(default=5, ge=0)
    #: Purposes of use the network knows at all (HL7 v3 PurposeOfUse and TEFCA codes).
    purposes: tuple[str, ...] = ("T-IAS", "T-TRTMNT", "TREAT", "HRESCH", "PUBHLTH")


class PopulationConfig(_Model):
    seed: int = 20240601
    size: int = Field(default=10_000, ge=100, le=1_000_000)
    #: Weights of "known at 0, 1, 2, 3, 4 organizations".
    orgs_per_person: tuple[float, float, float, float, float] = (0.18, 0.37, 0.27, 0.13, 0.05)
    #: Chance that an organization a person is known at is in another state than home.
    out_of_state: float = Field(default=0.15, ge=0, le=1)
    #: Ages are computed as of this date, so the population never changes with the clock.
    reference_date: str = "2025-01-01"


class DocumentsConfig(_Model):
    low: int = Field(default=1, ge=0)
    high: int = Field(default=8, ge=0)
    fhir: float = Field(default=0.5, ge=0)
    ccda: float = Field(default=0.33, ge=0)
    pdf: float = Field(default=0.09, ge=0)
    text: float = Field(default=0.08, ge=0)
    page_size: int = Field(default=4, ge=1, le=100)
    max_page_size: int = Field(default=50, ge=1)
    #: Size of the attachment the `oversized` fault serves.
    oversized_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _range(self) -> DocumentsConfig:
        if self.high < self.low:
            raise ValueError("documents.high must be >= documents.low")
        return self


class MatchConfig(_Model):
    default_count: int = Field(default=5, ge=1)
    max_count: int = Field(default=50, ge=1)
    #: Grade thresholds on the 0..1 score.
    certain: float = 0.92
    probable: float = 0.75
    possible: float = 0.55
    #: Candidates scoring at least this, but below `possible`, come back graded
    #: certainly-not (a real index sometimes says "this one is not them").
    certainly_not: float = 0.45


class FaultConfig(_Model):
    retry_after_s: int = Field(default=1, ge=0)
    #: How long `hang` waits before finally answering 504.
    hang_seconds: float = Field(default=3600.0, ge=0)
    #: Host used by the `foreign_host` fault for attachment URLs.
    foreign_host: str = "files.example.net"


class TestingConfig(_Model):
    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    #: Honour the X-Mock-Fault request header. Only test configurations turn this on.
    allow_forced_faults: bool = False


class RosterConfig(_Model):
    size: int = Field(default=1000, ge=1)
    seed: int = 7
    withdrawn: float = Field(default=0.05, ge=0, le=1)
    reconsented: float = Field(default=0.02, ge=0, le=1)
    declined: float = Field(default=0.02, ge=0, le=1)
    ehr_on_file: float = Field(default=0.10, ge=0, le=1)
    #: Multiplier of the enrollment-time noise (what participants typed).
    noise: float = Field(default=1.0, ge=0, le=5)


class NetworkConfig(_Model):
    #: Base URL the network publishes in its directory and links. None: taken from each
    #: request (right for in-process tests and a server on loopback).
    public_base_url: str | None = None
    population: PopulationConfig = PopulationConfig()
    orgs: tuple[OrgConfig, ...] = Field(min_length=1)
    clients: tuple[ClientConfig, ...] = ()
    auth: AuthConfig = AuthConfig()
    documents: DocumentsConfig = DocumentsConfig()
    match: MatchConfig = MatchConfig()
    fault: FaultConfig = FaultConfig()
    testing: TestingConfig = TestingConfig()
    roster: RosterConfig = RosterConfig()

    @field_validator("orgs")
    @classmethod
    def _unique_orgs(cls, orgs: tuple[OrgConfig, ...]) -> tuple[OrgConfig, ...]:
        ids = [org.id for org in orgs]
        if len(set(ids)) != len(ids):
            raise ValueError("organization ids must be unique")
        return orgs

    @field_validator("clients")
    @classmethod
    def _unique_clients(cls, clients: tuple[ClientConfig, ...]) -> tuple[ClientConfig, ...]:
        ids = [client.client_id for client in clients]
        if len(set(ids)) != len(ids):
            raise ValueError("client ids must be unique")
        return clients

    def org(self, org_id: str) -> OrgConfig | None:
        for org in self.orgs:
            if org.id == org_id:
                return org
        return None

    def client(self, client_id: str) -> ClientConfig | None:
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None


def load_config(path: Path | str) -> NetworkConfig:
    """Read a TOML config. Relative key-file paths are resolved against the config file's
    folder, so the same file works from any working directory."""
    path = Path(path)
    with path.open("rb") as handle:
        raw = tomllib.load(handle)
    base = path.resolve().parent
    for client in raw.get("clients", []):
        for key in ("public_key_file", "jwks_file"):
            if key in client and not Path(client[key]).is_absolute():
                client[key] = str((base / client[key]).resolve())
    return NetworkConfig.model_validate(raw)


def without_faults(config: NetworkConfig) -> NetworkConfig:
    """The same network with every fault, delay and rate limit off (benchmarks, demos)."""
    orgs = tuple(
        org.model_copy(
            update={"faults": FaultRates(), "latency": LatencyConfig(), "rate_limit": RateLimit()}
        )
        for org in config.orgs
    )
    return config.model_copy(update={"orgs": orgs})
