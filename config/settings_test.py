"""Test settings: a throw-away data folder; the database comes from DATABASE_URL as usual."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("ASSISTANT_DATA_DIR", tempfile.mkdtemp(prefix="assistant-test-"))
# One compiled encoder for the whole run, the servers the tests start included.
os.environ.setdefault(
    "EMBEDDING_CACHE_DIR", os.path.join(tempfile.gettempdir(), "assistant-test-encoders")
)

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405
# Answers are measured when looked at: no thread outlives the test that recorded an answer.
ANSWER_SUPPORT_AFTER_ANSWER = False
