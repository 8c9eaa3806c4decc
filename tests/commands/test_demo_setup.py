"""The demo's federation: an admin who can sign in with the password the demo prints."""

from __future__ import annotations

import stat

import pytest

from federation.models import Membership
from worker.demo import DEMO_ADMIN, DemoConfig, demo_admin_password, setup_federation

pytestmark = pytest.mark.django_db


def test_the_demo_admin_signs_in_with_the_password_kept_for_local_use(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    config = DemoConfig(sites=3, root=tmp_path / "demo")

    federation, credentials = setup_federation(config, {f"site-{i}": tmp_path for i in (1, 2, 3)})
    password, kept = demo_admin_password()

    assert kept == tmp_path / "demo-admin-password"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    federation.admin.refresh_from_db()
    assert federation.admin.username == DEMO_ADMIN and federation.admin.check_password(password)
    assert demo_admin_password()[0] == password  # the same on the next demo
    assert len(credentials) == 3
    assert Membership.objects.filter(federation=federation, status="approved").count() == 3
