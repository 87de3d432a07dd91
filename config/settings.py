"""Settings, all from the environment, with defaults that make a bare checkout run standalone."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

from config.env import env_bool, env_float, env_int, env_list, env_networks, env_str

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
    # The Django admin, for superusers only (accounts/admin_site.py).
    "accounts.apps.SuperuserAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "axes",
    "csp",
    "audit",
    "accounts",
    "ingestion",
    "sources",
    "inference",
    "assistant",
    # Benchmarks and test rigs (manage.py bench_*, qdrant_standin); the product never imports it.
    "bench",
]

MIDDLEWARE = [
    # First: probes reach pods by IP, before any middleware checks the Host header.
    "assistant.probes.probe_host_middleware",
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "config.request_context.RequestContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a refused login into the lockout page.
    "axes.middleware.AxesMiddleware",
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
                "accounts.context_processors.roles",
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
    # Connections pass from one request's thread to the next (config/sqlite_backend).
    DATABASES["default"]["ENGINE"] = "config.sqlite_backend"
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

# ---- Sign-on (README "Signing in"; the code is in accounts/ldap.py and accounts/oidc.py) ----
# Local accounts always work; LDAP / Active Directory and OpenID Connect are added when set.
# Directory groups become Django groups. Members of SUPERUSERS_GROUP (a directory group) become
# superusers at sign-in; when it is empty, no directory group makes anyone a superuser.
SUPERUSERS_GROUP = env_str("SUPERUSERS_GROUP", "")
LDAP_SERVER_URI = env_str("LDAP_SERVER_URI", "")
LDAP_BIND_DN = env_str("LDAP_BIND_DN", "")
LDAP_BIND_PASSWORD = env_str("LDAP_BIND_PASSWORD", "")
LDAP_USER_SEARCH_BASE = env_str("LDAP_USER_SEARCH_BASE", "")
LDAP_USER_FILTER = env_str("LDAP_USER_FILTER", "(uid=%(user)s)")
LDAP_GROUP_SEARCH_BASE = env_str("LDAP_GROUP_SEARCH_BASE", "")
# groupOfNames, nestedGroupOfNames, groupOfUniqueNames, posixGroup or activeDirectory.
LDAP_GROUP_TYPE = env_str("LDAP_GROUP_TYPE", "groupOfNames")
LDAP_GROUP_FILTER = env_str("LDAP_GROUP_FILTER", "")
LDAP_START_TLS = env_bool("LDAP_START_TLS", False)
LDAP_CA_CERT_FILE = env_str("LDAP_CA_CERT_FILE", "")
LDAP_TIMEOUT_S = env_float("LDAP_TIMEOUT_S", 10.0)
# A signed-in directory user's groups are read again after this long (0: at every request).
LDAP_REFRESH_SECONDS = env_int("LDAP_REFRESH_SECONDS", 900)
# The provider: an issuer whose discovery document names the endpoints, or the endpoints.
OIDC_OP_ISSUER = env_str("OIDC_OP_ISSUER", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_OP_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = env_str("OIDC_OP_USER_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_OP_JWKS_ENDPOINT", "")
OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = env_str("OIDC_RP_CLIENT_SECRET", "")
OIDC_RP_SIGN_ALGO = env_str("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES", "openid email profile")
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM", "groups")
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME", "single sign-on")
# A signed-in session goes back to the provider after this long, which renews its groups.
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env_int("OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS", 900)
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env_float("OIDC_TIMEOUT_S", 10.0)
OIDC_EXEMPT_URLS = ["login", "logout"]
OIDC_AUTHENTICATE_CLASS = "accounts.oidc.ProviderRedirectView"
OIDC_CALLBACK_CLASS = "accounts.oidc.ProviderCallbackView"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
LDAP_ENABLED = bool(LDAP_SERVER_URI)
OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID and (OIDC_OP_ISSUER or OIDC_OP_AUTHORIZATION_ENDPOINT))
SIGN_ON_MIDDLEWARE = [
    *(["accounts.oidc.SessionRefreshMiddleware"] if OIDC_ENABLED else []),
    *(["accounts.ldap.LDAPSessionRefreshMiddleware"] if LDAP_ENABLED else []),
]
_after_audit_context = MIDDLEWARE.index("config.request_context.RequestContextMiddleware") + 1
MIDDLEWARE[_after_audit_context:_after_audit_context] = SIGN_ON_MIDDLEWARE

# Login throttling first: a locked-out account and address is refused before any password check.
AUTHENTICATION_BACKENDS = [
    "accounts.login_throttle.LoginThrottleBackend",
    *(["accounts.oidc.DirectoryOIDCBackend"] if OIDC_ENABLED else []),
    *(["accounts.ldap.DirectoryLDAPBackend"] if LDAP_ENABLED else []),
    "django.contrib.auth.backends.ModelBackend",
]

# ---- Security (README "Security"; the code these name is in config/security.py) ----
# Served over HTTPS by a TLS-terminating proxy (Caddy in compose, the ingress in Kubernetes).
SECURE_BEHIND_TLS = env_bool("SECURE_BEHIND_TLS", False)
if SECURE_BEHIND_TLS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Probes and the metrics scraper reach the pods directly over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_BEHIND_TLS
# Addresses or CIDR networks of the proxies whose X-Forwarded-For is believed, by one rule
# (accounts/login_throttle.py: client_address; `serve` turns uvicorn's own reading off).
# Empty by default, as standalone needs: the client is whoever opened the connection, since a
# header believed from anyone else, loopback included, lets each login attempt claim a new
# address and escape the lockout. A cluster names its TLS proxy (deploy/: Caddy's fixed
# address, the ingress controller's pod network).
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES", "")
# How long `serve` keeps an idle connection: longer than the idle timeout of the proxies and
# clients in front of it (nginx and most load balancers: 60 s). A server that closes first
# races a request the client is sending on that connection, which then fails mid-air.
HTTP_KEEP_ALIVE_S = env_int("HTTP_KEEP_ALIVE_S", 75)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_AGE_HOURS", 12) * 3600
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# An internal host name cannot be on the browsers' public HSTS preload list, so Django's
# advice to ask for it does not apply unless SECURE_HSTS_PRELOAD is turned on.
SILENCED_SYSTEM_CHECKS = [] if SECURE_BEHIND_TLS and SECURE_HSTS_PRELOAD else ["security.W021"]
# No inline script or style anywhere: every page loads its code and styles from static files.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "object-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
    }
}
# After LOGIN_FAILURES_LIMIT failed logins of one account from one address, that pair is
# refused for LOGIN_LOCKOUT_MINUTES (each further try starts the wait again).
LOGIN_FAILURES_LIMIT = env_int("LOGIN_FAILURES_LIMIT", 5)
LOGIN_LOCKOUT_MINUTES = env_int("LOGIN_LOCKOUT_MINUTES", 15)
AXES_FAILURE_LIMIT = LOGIN_FAILURES_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_USERNAME_CALLABLE = "accounts.login_throttle.login_username"
AXES_CLIENT_IP_CALLABLE = "accounts.login_throttle.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.login_throttle.lockout_response"

# Roles (docs/PERMISSIONS.md): members of "<group><suffix>" administer the documents of <group>;
# members of AUDITORS_GROUP read the whole audit log. Groups may come from LDAP or OIDC alike.
DOCUMENT_ADMIN_GROUP_SUFFIX = env_str("DOCUMENT_ADMIN_GROUP_SUFFIX", "-admins")
if not DOCUMENT_ADMIN_GROUP_SUFFIX.strip():
    # An empty suffix would make every member of a group the administrator of that group.
    raise ValueError("DOCUMENT_ADMIN_GROUP_SUFFIX must not be empty")
AUDITORS_GROUP = env_str("AUDITORS_GROUP", "auditors")

# The ledger's anchor (audit/anchor.py): after each append the chain head is signed with an
# Ed25519 key the database never holds and appended to a file opened append-only (and sent to
# a syslog collector when one is named, "host:port" or a socket path). In production keep the
# key and the anchor file on storage the database's administrators cannot write. A standalone
# installation makes its key on first start. AUDIT_VERIFY_KEY_FILE: an auditor's copy of the
# public key, for checking with no access to the private one.
AUDIT_SIGNING_KEY_FILE = Path(
    env_str("AUDIT_SIGNING_KEY_FILE", str(DATA_DIR / "audit-signing.key"))
)
AUDIT_ANCHOR_FILE = Path(env_str("AUDIT_ANCHOR_FILE", str(DATA_DIR / "audit-anchors.jsonl")))
AUDIT_ANCHOR_SYSLOG = env_str("AUDIT_ANCHOR_SYSLOG", "")
AUDIT_VERIFY_KEY_FILE = env_str("AUDIT_VERIFY_KEY_FILE", "")

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
# Parsing limits. Each file is parsed in a child process that may use PARSE_MEMORY_MB of address
# space (about 200 MB of it is the parsers themselves) for PARSE_TIMEOUT_S seconds; a file that
# exceeds any limit fails alone, with the reason, and the worker goes on.
PARSE_MAX_PAGES = env_int("PARSE_MAX_PAGES", 5000)
PARSE_MAX_ZIP_MEMBERS = env_int("PARSE_MAX_ZIP_MEMBERS", 10000)
PARSE_MAX_UNCOMPRESSED_BYTES = env_int("PARSE_MAX_UNCOMPRESSED_BYTES", 500 * 1024 * 1024)
PARSE_MAX_COMPRESSION_RATIO = env_float("PARSE_MAX_COMPRESSION_RATIO", 100.0)
PARSE_MAX_SHEET_ROWS = env_int("PARSE_MAX_SHEET_ROWS", 100_000)
PARSE_MEMORY_MB = env_int("PARSE_MEMORY_MB", 2048)
PARSE_TIMEOUT_S = env_float("PARSE_TIMEOUT_S", 300.0)
# Scans and images: a picture of more pixels is refused before it is decoded; OCR reads these
# Tesseract languages, joined by "+" (each needs its tesseract-ocr-LANG package).
PARSE_MAX_IMAGE_PIXELS = env_int("PARSE_MAX_IMAGE_PIXELS", 60_000_000)
OCR_LANGUAGES = env_str("OCR_LANGUAGES", "eng")
# Ruled tables in PDFs are found (pdfplumber) and kept as Markdown tables; off, they are words.
PARSE_PDF_TABLES = env_bool("PARSE_PDF_TABLES", True)

# How long deleted documents stay on record before `documents_purge` may remove them for good.
DOCUMENT_RETENTION_DAYS = env_int("DOCUMENT_RETENTION_DAYS", 365)

# The vector index: embedded qdrant-edge by default, a Qdrant server when QDRANT_URL is set.
QDRANT_URL = env_str("QDRANT_URL", "")
QDRANT_API_KEY = env_str("QDRANT_API_KEY", "")
# qdrant-client's local mode (a folder); used where a Qdrant server API is wanted without a server.
QDRANT_PATH = env_str("QDRANT_PATH", "")
VECTOR_BACKEND = env_str("VECTOR_BACKEND", "server" if (QDRANT_URL or QDRANT_PATH) else "edge")
if VECTOR_BACKEND not in ("edge", "server"):
    raise ValueError("VECTOR_BACKEND must be 'edge' or 'server'")
VECTOR_COLLECTION = env_str("VECTOR_COLLECTION", "passages")
# A new collection on a distributed Qdrant: shards spread the points over the peers,
# replication keeps each shard on that many peers, and a write waits for this many copies.
VECTOR_SHARDS = env_int("VECTOR_SHARDS", 1)
VECTOR_REPLICATION = env_int("VECTOR_REPLICATION", 1)
VECTOR_WRITE_CONSISTENCY = env_int("VECTOR_WRITE_CONSISTENCY", 1)
VECTOR_INDEX_DIR = DATA_DIR / "index"
# The standalone server optimizes its embedded index only after this long without serving
# anyone: the optimizer stalls the whole process while it runs (ingestion/index_upkeep.py).
INDEX_OPTIMIZE_QUIET_S = env_float("INDEX_OPTIMIZE_QUIET_S", 3.0)

# Embeddings: the bundled all-MiniLM-L6-v2 unless a local folder is configured.
EMBEDDING_MODEL_PATH = env_str("EMBEDDING_MODEL_PATH", "")
# "auto" (bf16 where the CPU computes it natively, else fp32), "fp32", "bf16", or "int8": the
# model quantized once (OpenVINO, NNCF), faster still, with vectors an index keeps apart.
EMBEDDING_PRECISION = env_str("EMBEDDING_PRECISION", "auto")
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 64)
# The encoder's engine: "auto" measures torch against OpenVINO (compiled from the same model
# folder, kept under EMBEDDING_CACHE_DIR) at first start and keeps the faster one whose vectors
# match torch fp32; "torch" or "openvino" forces one (inference/embedder.py).
EMBEDDING_BACKEND = env_str("EMBEDDING_BACKEND", "auto")
EMBEDDING_CACHE_DIR = Path(env_str("EMBEDDING_CACHE_DIR", str(DATA_DIR / "encoders")))
CHUNK_MAX_TOKENS = env_int("CHUNK_MAX_TOKENS", 224)
# Passages embedded and indexed together; progress is saved after each batch, so a file's
# progress moves every two or three seconds even on two cores (at 256 a 300-passage PDF sat at
# "0 of 309" for 20 s). 128 rather than 64: each batch ends with one core idle while the
# other finishes its last request, and fewer batches gave 0.72x to 0.75-0.78x of the raw model.
INGEST_EMBED_BATCH = env_int("INGEST_EMBED_BATCH", 128)
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
# An answer is saved before it streams and checkpointed this often while it does; one whose
# last checkpoint is older than ANSWER_STALE_AFTER_S belongs to a process that died, and the
# next process to look closes it as interrupted (assistant/answer_recovery.py).
ANSWER_CHECKPOINT_S = env_float("ANSWER_CHECKPOINT_S", 1.0)
ANSWER_STALE_AFTER_S = env_float("ANSWER_STALE_AFTER_S", 30.0)
# How well each answer's sentences are supported by its citations is measured on a thread of
# its own once the answer is recorded; off, it is measured when first looked at instead
# (assistant/insight/support.py).
ANSWER_SUPPORT_AFTER_ANSWER = env_bool("ANSWER_SUPPORT_AFTER_ANSWER", True)

# Sources (README "Sources"): a run may delete at most this share of a source's documents
# unless confirmed, so an unmounted share or a site that is down never empties the index; a
# run whose worker shows no sign of life for SOURCE_RUN_STALE_S is resumed by another.
SOURCE_DELETE_MAX_SHARE = env_float("SOURCE_DELETE_MAX_SHARE", 0.5)
SOURCE_RUN_STALE_S = env_float("SOURCE_RUN_STALE_S", 120.0)
SOURCE_WEB_TIMEOUT_S = env_float("SOURCE_WEB_TIMEOUT_S", 30.0)
# The modules a llama_index source may take its reader class from (dotted prefixes).
SOURCE_LLAMA_READER_MODULES = env_list("SOURCE_LLAMA_READER_MODULES", "llama_index.")

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
    # How often workers look for such tasks: every interval x throttle seconds (100 by
    # default), which matters only where the visibility timeout is short.
    "unacked_restore_interval": env_int("CELERY_RESTORE_INTERVAL_S", 10),
    "unacked_restore_throttle": env_int("CELERY_RESTORE_THROTTLE", 10),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery beat (cluster mode) starts the sources' runs that are due; standalone has its own
# scheduler thread (sources/runner.py).
CELERY_BEAT_SCHEDULE = {
    "sources-due": {"task": "sources.tasks.sources_due", "schedule": 60.0},
}

# Personal API tokens: lifetime in days when none is given, the longest allowed, and whether
# a token may never expire (days 0).
API_TOKEN_DEFAULT_DAYS = env_int("API_TOKEN_DEFAULT_DAYS", 90)
API_TOKEN_MAX_DAYS = env_int("API_TOKEN_MAX_DAYS", 365)
API_TOKEN_ALLOW_NO_EXPIRY = env_bool("API_TOKEN_ALLOW_NO_EXPIRY", False)

# Rate limits ("30/minute", "200/hour", "off"), per user and per API token; the counts live in
# this process when standalone and in Redis in a cluster, where every app server shares them.
RATE_LIMIT_BACKEND = env_str("RATE_LIMIT_BACKEND", "memory" if STANDALONE else "redis")
RATE_LIMIT_REDIS_URL = env_str("RATE_LIMIT_REDIS_URL", CELERY_BROKER_URL)
RATE_LIMIT_ASK = env_str("RATE_LIMIT_ASK", "30/minute")
RATE_LIMIT_ASK_TOKEN = env_str("RATE_LIMIT_ASK_TOKEN", "20/minute")
RATE_LIMIT_UPLOAD = env_str("RATE_LIMIT_UPLOAD", "600/hour")
RATE_LIMIT_UPLOAD_TOKEN = env_str("RATE_LIMIT_UPLOAD_TOKEN", "300/hour")
# Answers in progress per user (0: no cap). A slot left by a killed server frees itself after
# the lease, which outlasts the longest answer.
STREAMS_PER_USER = env_int("STREAMS_PER_USER", 3)
STREAM_LEASE_S = env_int("STREAM_LEASE_S", int(VLLM_TOTAL_TIMEOUT_S) + 60)

# JSON request bodies (the APIs, the portal's script posts) larger than this are refused with
# 400; how deeply they may nest is fixed in config/json_bodies.py.
JSON_BODY_MAX_BYTES = env_int("JSON_BODY_MAX_BYTES", 1024 * 1024)
REST_FRAMEWORK = {
    "DEFAULT_PARSER_CLASSES": [
        "config.json_bodies.LimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "accounts.authentication.TokenScopePermission",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Knowledge assistant API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Django's <int:...> matches digits only: a negative id never reaches the API, so say so.
    "PATH_CONVERTER_OVERRIDES": {"int": {"type": "integer", "minimum": 0}},
    # Two models have a "status"; naming their enums keeps the schema (and check --deploy) clean.
    "ENUM_NAME_OVERRIDES": {
        "VersionStatusEnum": "ingestion.models.VersionStatus",
        "AnswerStatusEnum": "assistant.models.AnswerStatus",
    },
}

# Operations: a bearer token lets Prometheus scrape /metrics from another host; loopback needs none.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
READINESS_TIMEOUT_S = env_float("READINESS_TIMEOUT_S", 2.0)

# "json" (one object a line, with the request id of the audit record) or "plain".
LOG_FORMAT = env_str("LOG_FORMAT", "plain" if STANDALONE else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "config.logs.RequestIdFilter"},
        "expected_refusal": {"()": "config.logs.ExpectedRefusalFilter"},
    },
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
    # axes logs every sign-in at INFO; the ledger already records sign-ins.
    "loggers": {
        "httpx": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        "django.request": {"filters": ["expected_refusal"]},
    },
}
