"""Helpers for tests that talk to the mock network (its own and ehrfetch's): a small
network config built in code, signed client assertions, token forms, $match bodies.

Nothing here is used by the running network.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from mock_network.config import (
    ClientConfig,
    DocumentsConfig,
    FaultConfig,
    NetworkConfig,
    OrgConfig,
    PopulationConfig,
    RosterConfig,
    TestingConfig,
)
from mock_network.keys import generate_private_key, private_pem, public_pem

TEST_BASE = "http://mock.test"
TEST_CLIENT_ID = "tester"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class KeyPair:
    private: bytes
    public: bytes
    algorithm: str

    @classmethod
    def generate(cls, algorithm: str = "ES256") -> KeyPair:
        key = generate_private_key(algorithm)
        return cls(private_pem(key), public_pem(key), algorithm)


def small_config(
    key: KeyPair, *, client_id: str = TEST_CLIENT_ID, size: int = 2000, **changes: Any
) -> NetworkConfig:
    """Three organizations, 2,000 people, one client, forced faults allowed, a 30 s hang
    and a 3 MiB oversized document: quick to build and to exercise."""
    config = NetworkConfig(
        population=PopulationConfig(seed=11, size=size),
        orgs=(
            OrgConfig(id="org-a", name="Alpha Health", state="NY"),
            OrgConfig(id="org-b", name="Beta Clinics", state="CA"),
            OrgConfig(id="org-c", name="Gamma Medical", state="TX", purposes=("T-IAS", "TREAT")),
        ),
        clients=(
            ClientConfig(
                client_id=client_id,
                public_key_pem=key.public.decode(),
                allowed_purposes=("T-IAS", "HRESCH"),
            ),
        ),
        documents=DocumentsConfig(oversized_bytes=3 * 1024 * 1024),
        fault=FaultConfig(hang_seconds=30.0),
        testing=TestingConfig(allow_forced_faults=True),
        roster=RosterConfig(size=300),
    )
    return config.model_copy(update=changes)


def client_assertion(
    key: KeyPair,
    *,
    client_id: str = TEST_CLIENT_ID,
    aud: str = f"{TEST_BASE}/token",
    lifetime: int = 240,
    jti: str | None = None,
    issued: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A SMART backend-services client assertion (iss = sub = client id, aud = token URL)."""
    now = time.time() if issued is None else issued
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": int(now),
        "exp": int(now) + lifetime,
        "jti": jti or uuid.uuid4().hex,
        **(extra or {}),
    }
    return jwt.encode(claims, key.private, algorithm=key.algorithm)


def token_form(signed: str, purpose: str | None = "T-IAS", **extra: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        **extra,
    }
    if purpose is not None:
        form["purpose_of_use"] = purpose
    return form


def match_parameters(
    patient: dict[str, Any], *, count: int | None = None, only_certain: bool | None = None
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [{"name": "resource", "resource": patient}]
    if count is not None:
        parameters.append({"name": "count", "valueInteger": count})
    if only_certain is not None:
        parameters.append({"name": "onlyCertainMatches", "valueBoolean": only_certain})
    return {"resourceType": "Parameters", "parameter": parameters}


_SEX = {"M": "male", "F": "female", "O": "other", "U": "unknown"}


def roster_patient(row: dict[str, str]) -> dict[str, Any]:
    """A roster.csv row as the FHIR Patient a client would send to $match."""
    name: dict[str, Any] = {
        "family": row["family"],
        "given": [g for g in (row["given"], row["middle"]) if g],
    }
    if row["suffix"]:
        name["suffix"] = [row["suffix"]]
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [name],
        "birthDate": row["birth_date"],
        "gender": _SEX.get(row["sex"], row["sex"]),
    }
    if row["address_line1"]:
        patient["address"] = [
            {
                "line": [row["address_line1"]],
                "city": row["city"],
                "state": row["state"],
                "postalCode": row["postal_code"],
            }
        ]
    telecom = []
    if row["phone"]:
        telecom.append({"system": "phone", "value": row["phone"]})
    if row["email"]:
        telecom.append({"system": "email", "value": row["email"]})
    if telecom:
        patient["telecom"] = telecom
    return patient
