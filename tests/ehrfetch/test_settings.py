from __future__ import annotations

import json
from pathlib import Path

import pytest

from ehrfetch.errors import ConfigError
from ehrfetch.settings import Settings, StoreSettings, load_settings
from ehrfetch.store.engine import create_store_engine


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_a_file_use_sqlite_in_the_working_folder() -> None:
    settings = load_settings()
    assert settings.store.url == "sqlite:///ehrfetch.db"
    assert settings.network.directory_url.startswith("http://127.0.0.1")
    assert settings.cohort.consent_type == "ehr"


def test_default_file_is_read_from_config_folder(tmp_path: Path) -> None:
    write(tmp_path / "config/ehrfetch.toml", "[cohort]\nbatch_size = 17\n")
    assert load_settings().cohort.batch_size == 17


def test_environment_overrides_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "config/ehrfetch.toml",
        '[store]\nurl = "sqlite:///from-file.db"\n'
        '[cohort]\nbatch_size = 17\nconsent_type = "ehr2"\n',
    )
    monkeypatch.setenv("EHRFETCH__STORE__URL", "sqlite:///from-env.db")
    monkeypatch.setenv("EHRFETCH__COHORT__BATCH_SIZE", "33")
    settings = load_settings()
    assert settings.store.url == "sqlite:///from-env.db"
    assert settings.cohort.batch_size == 33
    # A key the environment does not name keeps the file's value.
    assert settings.cohort.consent_type == "ehr2"


def test_explicit_config_file_replaces_the_default_file(tmp_path: Path) -> None:
    write(tmp_path / "config/ehrfetch.toml", "[cohort]\nbatch_size = 17\n")
    other = write(tmp_path / "other.toml", "[cohort]\nbatch_size = 99\n")
    assert load_settings(other).cohort.batch_size == 99


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: settings file not found"):
        load_settings(tmp_path / "missing.toml")


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "[store]\nurl = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML.*line 2"):
        load_settings(bad)


def test_invalid_value_names_key_and_variable_but_not_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EHRFETCH__COHORT__BATCH_SIZE", "-123456")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "cohort.batch_size" in message
    assert "EHRFETCH__COHORT__BATCH_SIZE" in message
    assert "-123456" not in message


@pytest.mark.parametrize("purpose", ["", "T IAS", "TREAT\n"])
def test_a_purpose_of_use_that_is_not_one_code_is_refused(tmp_path: Path, purpose: str) -> None:
    # It becomes the policy URI of every Provenance, which is not validated per document.
    bad = write(tmp_path / "bad.toml", f"[network]\npurpose_of_use = {json.dumps(purpose)}\n")
    with pytest.raises(ConfigError, match=r"network\.purpose_of_use"):
        load_settings(bad)


def test_unknown_key_is_an_error_not_ignored(tmp_path: Path) -> None:
    typo = write(tmp_path / "typo.toml", '[store]\nulr = "sqlite:///x.db"\n')
    with pytest.raises(ConfigError, match=r"store\.ulr"):
        load_settings(typo)


def test_unsupported_database_is_refused(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", '[store]\nurl = "mysql://h/db"\n')
    with pytest.raises(ConfigError, match="only sqlite and postgresql"):
        load_settings(bad)


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHRFETCH__STORE__PASSWORD", "hunter2-secret")
    monkeypatch.setenv("EHRFETCH__NETWORK__PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----abc")
    settings = load_settings()
    assert "hunter2-secret" not in repr(settings)
    assert "BEGIN PRIVATE KEY" not in str(settings)
    assert settings.store.password is not None
    assert settings.store.password.get_secret_value() == "hunter2-secret"


def test_store_password_joins_the_url_but_display_masks_it() -> None:
    store = StoreSettings(url="postgresql://ehrfetch@db.example:5432/ehr", password="s3cret")
    url = store.sqlalchemy_url()
    assert url.password == "s3cret"
    assert url.drivername == "postgresql+psycopg"
    assert "s3cret" not in store.display_url()
    assert "***" in store.display_url()


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.cohort.batch_size = 3  # type: ignore[misc]


def test_each_store_worker_thread_keeps_its_postgresql_connection() -> None:
    # Store work runs on the batch's store threads (two by default): with fewer pooled
    # connections, the rest are opened and closed per transaction, a new PostgreSQL
    # backend each time.
    threads = 2
    default = StoreSettings(url="postgresql://ehrfetch@127.0.0.1:1/ehrfetch")
    assert default.connections() == threads + 2
    engine = create_store_engine(default)  # no connection is made until one is used
    assert engine.pool.size() == threads + 2  # type: ignore[attr-defined]
    chosen = create_store_engine(default.model_copy(update={"pool_size": 3}))
    assert chosen.pool.size() == 3  # type: ignore[attr-defined]
    sqlite_file = create_store_engine(StoreSettings(url="sqlite:///store.db"))
    assert sqlite_file.pool.size() == threads + 2  # type: ignore[attr-defined]
    create_store_engine(StoreSettings(url="sqlite://"))  # in memory: no pool to size
    six = default.model_copy(update={"threads": 6})
    assert six.connections() == 8
    assert create_store_engine(six).pool.size() == 8  # type: ignore[attr-defined]
