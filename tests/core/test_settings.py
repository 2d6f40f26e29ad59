"""One settings object: defaults < TOML file < CLOUDPHONE_* environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cloudphone.core.settings import Settings


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.http_host == "127.0.0.1" and settings.http_port == 8080
    assert settings.database_url == "sqlite+aiosqlite:///data/cloudphone.db"
    assert settings.development_mode is False


def test_toml_file_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "cp.toml"
    config.write_text('http_port = 9000\ndata_dir = "/srv/cp"\nlog_level = "debug"\n')
    monkeypatch.setenv("CLOUDPHONE_CONFIG", str(config))
    monkeypatch.setenv("CLOUDPHONE_HTTP_PORT", "9100")
    settings = Settings()
    assert settings.http_port == 9100  # environment wins
    assert settings.data_dir == Path("/srv/cp")  # from the file
    assert settings.log_level == "debug"
    assert settings.database_url == "sqlite+aiosqlite:////srv/cp/cloudphone.db"


def test_database_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDPHONE_DATABASE_URL", "postgresql+asyncpg://cp:pw@db/cp")
    assert Settings().database_url == "postgresql+asyncpg://cp:pw@db/cp"


def test_masked_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDPHONE_DATABASE_URL", "postgresql+asyncpg://cp:s3cret@db/cp")
    monkeypatch.setenv("CLOUDPHONE_MASTER_KEY", "k1:AAAA")
    shown = Settings().masked()
    assert "s3cret" not in str(shown) and "AAAA" not in str(shown)
    assert shown["database_url"] == "postgresql+asyncpg://cp:**********@db/cp"


def test_unknown_and_bad_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLOUDPHONE_HTTP_PORT", "70000")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.delenv("CLOUDPHONE_HTTP_PORT")
    config = tmp_path / "cp.toml"
    config.write_text("no_such_setting = 1\n")
    monkeypatch.setenv("CLOUDPHONE_CONFIG", str(config))
    with pytest.raises(ValidationError):
        Settings()
