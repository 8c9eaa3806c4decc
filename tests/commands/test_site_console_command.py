"""``manage.py site_console`` as a site's owner runs it: it serves the console on the
loopback address and prints the address that signs the owner in."""

from __future__ import annotations

import http.cookiejar
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.helpers import ROOT, manage
from tests.site_state import make_site_state


@pytest.fixture(scope="module")
def site(tmp_path_factory, cmapss_dir):
    return make_site_state(tmp_path_factory.mktemp("console"), cmapss_dir, epochs=2)


def test_the_console_serves_the_owner_at_the_printed_address_and_no_one_else(site):
    data, state = site
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "site_console",
            "--state-dir",
            str(state),
            "--port",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Console of site site-7: http://127.0.0.1:"), line
        address = line.split(": ", 1)[1].strip()
        base = address.split("?")[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "sent/", timeout=30)
        assert refused.value.code == 403
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(address, timeout=60) as page:  # the redirect sets the cookie
            assert page.status == 200 and b"Your fleet today" in page.read()
        with opener.open(base + "fleet.csv", timeout=60) as exported:
            assert exported.read().startswith(b"file,unit,cycles_run,predicted_rul")
        # The coordinator's pages and API are not served here.
        with pytest.raises(urllib.error.HTTPError) as missing:
            opener.open(base + "api/v1/site", timeout=30)
        assert missing.value.code == 404
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_console_needs_the_sites_state_folder_and_only_listens_here(tmp_path):
    missing = manage("site_console", "--state-dir", str(tmp_path / "nowhere"), "--port", "0")
    assert missing.returncode != 0
    assert "is not a folder: give the --state-dir the site worker runs with" in missing.stderr
    (tmp_path / "state").mkdir()
    no_data = manage("site_console", "--state-dir", str(tmp_path / "state"), "--port", "0")
    assert "give --data-dir" in no_data.stderr
    public = manage("site_console", "--state-dir", str(tmp_path), "--host", "0.0.0.0")
    assert public.returncode != 0 and "invalid choice: '0.0.0.0'" in public.stderr
