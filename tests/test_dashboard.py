from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_home_page_leads_to_the_federations_and_to_signing_up(client):
    response = client.get("/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="/federations/"' in page and 'href="/accounts/signup/"' in page


def test_healthz_reports_the_database(client):
    response = client.get("/healthz")

    assert response.json() == {"status": "ok", "database": response.json()["database"]}
    assert response.json()["database"] in {"sqlite", "postgresql"}
