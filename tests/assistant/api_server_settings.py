"""Settings for a server started by the API tests: the project's, with the APIs routed."""

from __future__ import annotations

from config.settings import *  # noqa: F403

ROOT_URLCONF = "tests.assistant.urls_for_api"
