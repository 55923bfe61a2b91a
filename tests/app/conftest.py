"""The service fixtures live in service_fixtures.py (a unique module name, so other test folders
can import them too: put tests/app on sys.path and `from service_fixtures import *`)."""

from service_fixtures import *  # noqa: F403
