import pytest


@pytest.fixture(autouse=True)
def _media(media_root):
    """Every database test writes its files to a folder of its own."""
    return media_root
