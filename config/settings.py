"""Settings, all from the environment, with defaults that make a bare checkout run standalone."""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url

from config.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

# Everything standalone mode keeps (database, stored files, embedded index) lives here.
DATA_DIR = Path(env_str("ASSISTANT_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

# "standalone": one process runs the web server and the ingestion tasks.
# "cluster": tasks go through the Redis broker to separate Celery workers.
ASSISTANT_MODE = env_str("ASSISTANT_MODE", "standalone")
if ASSISTANT_MODE not in ("standalone", "cluster"):
    raise ValueError("ASSISTANT_MODE must be 'standalone' or 'cluster'")
STANDALONE = ASSISTANT_MODE == "standalone"


def _secret_key() -> str:
    configured = env_str("SECRET_KEY", "")
    if configured:
        return configured
    # A bare checkout keeps a generated key under the data folder so sessions survive restarts.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "ingestion",
    "inference",
    "assistant",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "assistant.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "assistant.audit.audit_context",
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the task thread write concurrently: wait for the lock, use WAL.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
MEDIA_ROOT = Path(env_str("ASSISTANT_FILES_DIR", str(DATA_DIR / "files")))

# Uploads: the size limit is checked before a file is stored.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 100 * 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("UPLOAD_MAX_FILES", 1000)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# How long deleted documents stay on record before `documents_purge` may remove them for good.
DOCUMENT_RETENTION_DAYS = env_int("DOCUMENT_RETENTION_DAYS", 365)

# The vector index: embedded qdrant-edge by default, a Qdrant server when QDRANT_URL is set.
QDRANT_URL = env_str("QDRANT_URL", "")
QDRANT_API_KEY = env_str("QDRANT_API_KEY", "")
# qdrant-client's local mode (a folder); used where a Qdrant server API is wanted without a server.
QDRANT_PATH = env_str("QDRANT_PATH", "")
VECTOR_BACKEND = env_str("VECTOR_BACKEND", "server" if (QDRANT_URL or QDRANT_PATH) else "edge")
VECTOR_COLLECTION = env_str("VECTOR_COLLECTION", "passages")
VECTOR_INDEX_DIR = DATA_DIR / "index"

# Embeddings: the bundled all-MiniLM-L6-v2 unless a local folder is configured.
EMBEDDING_MODEL_PATH = env_str("EMBEDDING_MODEL_PATH", "")
EMBEDDING_PRECISION = env_str("EMBEDDING_PRECISION", "auto")
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 64)
CHUNK_MAX_TOKENS = env_int("CHUNK_MAX_TOKENS", 224)
# Passages embedded and indexed together; progress is saved after each batch.
INGEST_EMBED_BATCH = env_int("INGEST_EMBED_BATCH", 256)
CHUNK_OVERLAP_TOKENS = env_int("CHUNK_OVERLAP_TOKENS", 40)

# Retrieval: hybrid dense + BM25, fused inside Qdrant; a local cross-encoder folder enables rerank.
RETRIEVAL_TOP_K = env_int("RETRIEVAL_TOP_K", 8)
RETRIEVAL_CANDIDATES = env_int("RETRIEVAL_CANDIDATES", 400)
RETRIEVAL_FUSION = env_str("RETRIEVAL_FUSION", "dbsf")
RERANKER_MODEL_PATH = env_str("RERANKER_MODEL_PATH", "")
QUESTION_MAX_CHARS = env_int("QUESTION_MAX_CHARS", 4000)

# Answers: R1 on a pool of vLLM servers, or extractive answers when none is configured.
VLLM_URLS = env_list("VLLM_URLS", "")
VLLM_API_KEY = env_str("VLLM_API_KEY", "")
VLLM_MODEL = env_str("VLLM_MODEL", "")
VLLM_CONNECT_TIMEOUT_S = env_float("VLLM_CONNECT_TIMEOUT_S", 5.0)
VLLM_FIRST_TOKEN_TIMEOUT_S = env_float("VLLM_FIRST_TOKEN_TIMEOUT_S", 60.0)
VLLM_TOTAL_TIMEOUT_S = env_float("VLLM_TOTAL_TIMEOUT_S", 600.0)
VLLM_MAX_TOKENS = env_int("VLLM_MAX_TOKENS", 4096)

# Celery. Standalone runs the same tasks inside the server process (see ingestion.runner).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 1800)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 1900)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # An unacknowledged task of a dead worker is delivered again after this many seconds.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Knowledge assistant API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# Operations: a bearer token lets Prometheus scrape /metrics from another host; loopback needs none.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
READINESS_TIMEOUT_S = env_float("READINESS_TIMEOUT_S", 2.0)

# "json" (one object a line, with the request id of the audit record) or "plain".
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if STANDALONE else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}},
}
