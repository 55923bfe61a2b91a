"""The worker tests' fixtures live in worker_fixtures.py (a unique module name: test folders here
have no __init__.py, so pytest imports helpers by their base name)."""

from worker_fixtures import *  # noqa: F403
