"""The config: the shipped TOML loads, mistakes are refused, key paths resolve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mock_network.config import (
    ClientConfig,
    FaultRates,
    LatencyConfig,
    NetworkConfig,
    OrgConfig,
    load_config,
    without_faults,
)

REPO = Path(__file__).resolve().parents[2]
ORG = '[[orgs]]\nid = "a"\nname = "A"\nstate = "NY"\n'


def test_shipped_config_loads() -> None:
    config = load_config(REPO / "config" / "mock_network.toml")
    assert config.population.size == 300_000
    assert len(config.orgs) >= 4
    assert config.testing.allow_forced_faults is False
    (client,) = config.clients
    assert client.public_key_file is not None and client.public_key_file.is_absolute()
    assert client.public_key_file == (REPO / ".work" / "keys" / "ehrfetch.pub.pem").resolve()
    assert any(org.faults != FaultRates() for org in config.orgs)


def test_without_faults_turns_everything_off() -> None:
    config = without_faults(load_config(REPO / "config" / "mock_network.toml"))
    assert all(org.faults == FaultRates() and org.latency == LatencyConfig() for org in config.orgs)
    assert all(org.rate_limit.per_second == 0 for org in config.orgs)


@pytest.mark.parametrize(
    "toml",
    [
        '[[orgs]]\nid = "a"\nname = "A"\nstate = "NY"\nsurprise = 1\n',  # unknown key
        '[[orgs]]\nid = "Bad Id"\nname = "A"\nstate = "NY"\n',
        ORG + '[[orgs]]\nid = "a"\nname = "B"\nstate = "CA"\n',  # duplicate id
        ORG + "[orgs.faults]\nserver_error = 0.7\nhang = 0.5\n",  # rates add up over 1
        '[population]\nsize = 5\n[[orgs]]\nid = "a"\nname = "A"\nstate = "NY"\n',
        '[population]\nsize = 2000000\n[[orgs]]\nid = "a"\nname = "A"\nstate = "NY"\n',
        '[auth]\nmax_assertion_lifetime_s = 600\n[[orgs]]\nid = "a"\nname = "A"\nstate = "NY"\n',
        "orgs = []\n",
    ],
)
def test_mistakes_are_refused(tmp_path: Path, toml: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ValidationError):
        load_config(path)


def test_a_client_has_exactly_one_key_source() -> None:
    with pytest.raises(ValidationError):
        ClientConfig(client_id="x")
    with pytest.raises(ValidationError):
        ClientConfig(client_id="x", public_key_pem="pem", jwks_file=Path("k.json"))


def test_config_is_buildable_in_code() -> None:
    config = NetworkConfig(orgs=(OrgConfig(id="a", name="A", state="NY"),))
    assert config.org("a") is not None and config.org("b") is None
    assert config.auth.token_lifetime_s == 300


def test_keygen_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mock_network",
            "keygen",
            "--out-dir",
            str(tmp_path),
            "--name",
            "demo",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)
    assert Path(paths["private_key"]).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert Path(paths["public_key"]).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert json.loads(Path(paths["jwks"]).read_text())["keys"][0]["kid"] == "demo"
    assert Path(paths["private_key"]).stat().st_mode & 0o077 == 0
