"""The production shape holds the trust boundary: a site service gets the coordinator's
public URL and its own credential, and nothing of the coordinator's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

COMPOSE = Path(settings.BASE_DIR) / "docker-compose.yml"
# What only the coordinator may hold: its signing secret, its database, its broker.
COORDINATOR_ONLY = {
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "POSTGRES_PASSWORD",
    "ALLOWED_HOSTS",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merges the << anchors
    return loaded


def site_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if "site_worker" in " ".join(service.get("command", []))
    }


def test_there_are_site_services_to_check(compose):
    assert sorted(site_services(compose)) == ["site-a", "site-b"]


def test_a_site_gets_the_coordinators_url_and_its_credential_and_nothing_of_the_coordinators(
    compose,
):
    for name, service in site_services(compose).items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), name
        assert not COORDINATOR_ONLY & set(environment), (name, sorted(environment))
        assert not any(
            "postgres" in str(v) or "redis://" in str(v) for v in environment.values()
        ), name
        assert {"COORDINATOR_URL", "SITE_CREDENTIAL"} <= set(environment), name
        assert environment.get("DJANGO_ENV") == "local", name  # its own local secret


def test_a_site_reaches_the_web_app_only(compose):
    services = compose["services"]
    coordinator_networks = {
        network
        for name in ("postgres", "redis", "coordinator")
        for network in services[name]["networks"]
    }
    assert compose["networks"]["coordinator"]["internal"] is True
    for name, service in site_services(compose).items():
        networks = set(service["networks"])
        assert not networks & coordinator_networks, name
        reachable = (
            {
                other
                for other, s in services.items()
                if other != name and networks & set(s.get("networks", []))
            }
            - set(site_services(compose))
            - {"demo-data"}
        )
        assert reachable == {"web", "api"}, (name, reachable)


def test_each_site_has_its_own_data_and_state(compose):
    seen: dict[str, str] = {}
    for name, service in site_services(compose).items():
        volumes = [volume.split(":")[0] for volume in service["volumes"]]
        assert len(volumes) == 2, name  # its data, its state (and embedded broker)
        for volume in volumes:
            assert volume not in seen, f"{name} shares {volume} with {seen.get(volume)}"
            seen[volume] = name
    for name in ("web", "coordinator", "migrate"):
        shared = {v.split(":")[0] for v in compose["services"][name].get("volumes", [])} & set(seen)
        assert not shared, (name, shared)


def test_the_site_api_has_a_worker_pool_of_its_own(compose):
    api = compose["services"]["api"]

    assert api["environment"]["SERVE"] == "api"
    assert "gunicorn" in api["command"]
    assert "SERVE" not in compose["services"]["web"]["environment"]
