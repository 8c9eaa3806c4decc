"""Settings come from the environment and stop the process on a bad value."""

from __future__ import annotations

import secrets

import pytest

from tests.helpers import manage

PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "fleet.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://fleet.example.com",
}


@pytest.fixture
def local_env(tmp_path, monkeypatch):
    """A clean environment with its own var/ folder, as on a fresh checkout."""
    for name in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "DJANGO_ENV", "ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    return {"VAR_DIR": str(tmp_path / "var")}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        ("DATABASE_URL", "mysqll://db/x", "DATABASE_URL has scheme 'mysqll'"),
        ("DATABASE_URL", "postgres://db:5432", "names no database"),
        ("REDIS_URL", "http://cache:6379", "REDIS_URL has scheme 'http'"),
        ("DB_CONN_MAX_AGE", "ten", "DB_CONN_MAX_AGE='ten' is not an integer"),
        ("DJANGO_ENV", "prod", "DJANGO_ENV='prod' is not one of: local, production"),
    ],
)
def test_a_bad_value_stops_start_up_with_a_message_naming_it(local_env, name, value, message):
    result = manage("check", env={**local_env, name: value})

    assert result.returncode != 0
    assert message in result.stderr


def test_production_requires_a_secret_key(local_env):
    env = {**local_env, **PRODUCTION, "SECRET_KEY": ""}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "SECRET_KEY is required when DJANGO_ENV=production" in result.stderr


def test_production_requires_allowed_hosts(local_env):
    result = manage("check", env={**local_env, **PRODUCTION, "ALLOWED_HOSTS": ""})

    assert "ALLOWED_HOSTS is required" in result.stderr


def test_production_settings_pass_the_deployment_checklist(local_env):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env={**local_env, **PRODUCTION})

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_a_local_secret_key_is_generated_once_and_kept(local_env, tmp_path):
    shell = "from django.conf import settings; print(settings.SECRET_KEY)"

    first = manage("shell", "--no-imports", "-c", shell, env=local_env)
    second = manage("shell", "--no-imports", "-c", shell, env=local_env)

    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and len(first.stdout.strip()) >= 50
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0


def test_debug_is_off_unless_asked_for(local_env):
    shell = "from django.conf import settings; print(settings.DEBUG)"

    assert manage("shell", "--no-imports", "-c", shell, env=local_env).stdout.strip() == "False"
    assert (
        manage(
            "shell", "--no-imports", "-c", shell, env={**local_env, "DEBUG": "on"}
        ).stdout.strip()
        == "True"
    )


def test_the_coordinators_database_and_files_are_for_its_user_only(local_env, tmp_path):
    (tmp_path / "var").mkdir(mode=0o755)  # as an older installation left it

    result = manage("migrate", "--no-input", env=local_env)

    assert result.returncode == 0, result.stderr
    var = tmp_path / "var"
    for path in (var, var / "db.sqlite3", var / "media"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_api_pool_serves_the_site_api_and_nothing_else(local_env):
    shell = (
        "from django.test import Client; c = Client(HTTP_HOST='localhost'); "
        "print(c.get('/api/v1/openapi.json').status_code, c.get('/healthz').status_code, "
        "c.get('/federations/').status_code, c.get('/accounts/login/').status_code)"
    )

    assert manage("migrate", "--no-input", env=local_env).returncode == 0

    api = manage("shell", "--no-imports", "-c", shell, env={**local_env, "SERVE": "api"})
    everything = manage("shell", "--no-imports", "-c", shell, env=local_env)

    assert api.stdout.split() == ["200", "200", "404", "404"], api.stderr
    assert everything.stdout.split() == ["200", "200", "200", "200"], everything.stderr
