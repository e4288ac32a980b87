"""A real server on loopback, where sockets matter: the serve command, a dropped
connection, a hang past the client's timeout, and fhirpy (an independent FHIR client)
reading the directory, running $match and paging through DocumentReferences."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fhirpy import AsyncFHIRClient

from mock_network.config import NetworkConfig
from mock_network.documents_api import DocumentStore
from mock_network.population import Population
from mock_network.testing import KeyPair, client_assertion, match_parameters, token_form

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    base: str
    key: KeyPair
    population: Population


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_config(folder: Path, key: KeyPair) -> Path:
    (folder / "keys").mkdir()
    (folder / "keys" / "tester.pub.pem").write_bytes(key.public)
    path = folder / "network.toml"
    path.write_text("""
[population]
seed = 11
size = 2000

[testing]
allow_forced_faults = true

[fault]
hang_seconds = 30

[[clients]]
client_id = "tester"
public_key_file = "keys/tester.pub.pem"
allowed_purposes = ["T-IAS"]

[[orgs]]
id = "org-a"
name = "Alpha Health"
state = "NY"

[[orgs]]
id = "org-b"
name = "Beta Clinics"
state = "CA"
""")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("network")
    key = KeyPair.generate("ES256")
    config_path = _write_config(folder, key)
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mock_network",
            "serve",
            "--config",
            str(config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                raise AssertionError(f"server did not start: {output}")
            time.sleep(0.1)
        from mock_network.config import load_config

        yield Server(base, key, Population(load_config(config_path)))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def _token(client: httpx.AsyncClient, server: Server) -> str:
    signed = client_assertion(server.key, aud=f"{server.base}/token")
    response = await client.post(f"{server.base}/token", data=token_form(signed))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def test_dropped_connection_over_a_socket(server: Server) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        headers = {
            "Authorization": f"Bearer {await _token(client, server)}",
            "X-Mock-Fault": "dropped_connection",
        }
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{server.base}/orgs/org-a/fhir/metadata", headers=headers)
        # The server is fine afterwards.
        assert (await client.get(f"{server.base}/healthz")).status_code == 200


async def test_hang_outlives_the_client_timeout(server: Server) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.5)) as client:
        began = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await client.get(
                f"{server.base}/orgs/org-a/fhir/metadata", headers={"X-Mock-Fault": "hang"}
            )
        assert time.monotonic() - began < 3


def _participant(population: Population, org: str) -> tuple[int, str]:
    store = DocumentStore(population.config, population)
    for index in range(population.size):
        if org in population.orgs_of(index) and store.count(index, org) >= 3:
            return index, population.patient_id(index, org)
    raise AssertionError("no patient with three documents")


async def test_fhirpy_reads_directory_matches_and_pages(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        token = await _token(http, server)
    directory = await AsyncFHIRClient(url=server.base).execute("directory", method="get")
    endpoints = [
        e["resource"] for e in directory["entry"] if e["resource"]["resourceType"] == "Endpoint"
    ]
    org_a = next(e["address"] for e in endpoints if e["id"] == "org-a-fhir")
    assert org_a == f"{server.base}/orgs/org-a/fhir"

    fhir = AsyncFHIRClient(url=org_a, authorization=f"Bearer {token}")
    index, patient_id = _participant(server.population, "org-a")
    person = server.population.person(index)
    patient = {
        "resourceType": "Patient",
        "gender": person.sex,
        "birthDate": person.birth_date.isoformat(),
        "name": [{"family": person.family, "given": [person.given]}],
    }
    bundle = await fhir.execute("Patient/$match", method="post", data=match_parameters(patient))
    assert bundle["resourceType"] == "Bundle"
    assert patient_id in [e["resource"]["id"] for e in bundle["entry"]]

    search = (
        fhir.resources("DocumentReference").search(patient=patient_id, status="current").limit(2)
    )
    references = await search.fetch_all()
    store = DocumentStore(server.population.config, server.population)
    assert len(references) == store.count(index, "org-a") >= 3
    assert len({r["id"] for r in references}) == len(references)
    assert all(r["subject"]["reference"] == f"Patient/{patient_id}" for r in references)


def test_startup_config_is_the_one_served(server: Server) -> None:
    health = httpx.get(f"{server.base}/healthz", timeout=5).json()
    assert health["people"] == 2000 and health["organizations"] == 2
    assert isinstance(server.population.config, NetworkConfig)
