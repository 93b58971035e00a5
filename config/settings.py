"""Settings for the API-key portal and gateway.

Every setting comes from the environment with a safe default. With nothing set the product runs
embedded (SQLite, in-process cache, tasks run in-process); `DATABASE_URL` and `REDIS_URL` switch
it to its production shape. Production fails closed: `DEBUG` is off unless asked for, and there is
no default secret key outside debug mode.
"""

import os
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from keys.log_context import logging_config

# Lets the classes the stubs make generic be subscripted at run time too (admin.ModelAdmin[ApiKey],
# forms.ModelForm[Upstream]), as keys/admin.py does for its types.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "insecure-development-only-key-do-not-use-in-production"  # noqa: S105

# Hosts that serve only the proxy (`/proxy/`), never the portal, admin or API: proxied content then
# never shares an origin (nor cookies) with the site. Recommended in production. Empty: every host
# serves both. Entries as in DJANGO_ALLOWED_HOSTS (`.example.com` for subdomains); they are allowed hosts.
PROXY_HOSTS = env_list("PROXY_HOSTS")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]") + PROXY_HOSTS
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served from here: the docs work offline
    "corsheaders",
    "django_celery_beat",
    "keys",
    "portal",
    "proxy",
    "ops",
]

MIDDLEWARE = [
    "keys.middleware.RequestIdMiddleware",
    "proxy.middleware.ProxyHostsMiddleware",
    # Before anything that can answer (CommonMiddleware's redirects), so those answers carry CORS too.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
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
            ],
        },
    },
]

# PostgreSQL in production (DATABASE_URL=postgres://...); a SQLite file when unset.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis for cache, counters and the Celery broker when REDIS_URL is set; in-process otherwise.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "kp"),
            "OPTIONS": {
                # A cache outage must degrade the product, not take it down.
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # django-ratelimit rightly warns that an in-process cache is not shared between processes;
    # the embedded default is a single process, so the warning does not apply there.
    SILENCED_SYSTEM_CHECKS = ["django_ratelimit.E003", "django_ratelimit.W001"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Security headers; production values are switched on by DJANGO_SECURE=1 (behind TLS).
SECURE = env_bool("DJANGO_SECURE", not DEBUG)
SECURE_SSL_REDIRECT = SECURE and env_bool("DJANGO_SSL_REDIRECT", True)
# Load-balancer probes and Prometheus speak plain HTTP to the process: health, readiness and metrics
# never redirect.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DJANGO_BEHIND_TLS_PROXY") else None
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000" if SECURE else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Fernet keys that encrypt upstream credentials at rest, comma-separated: the first encrypts, all
# decrypt, so a key is rotated by putting a new one first (then `manage.py reencrypt_credentials`).
# Unset, a key derived from SECRET_KEY is used; `check --deploy` warns about that.
KEYS_ENCRYPTION_KEYS = env_list("KEYS_ENCRYPTION_KEYS")
# Longest lifetime of an access token, in seconds (DESIGN.md: 86400).
KEYS_TOKEN_MAX_TTL = int(os.environ.get("KEYS_TOKEN_MAX_TTL", "86400"))
# Lifetime of an access token when the caller does not choose one, in seconds.
KEYS_TOKEN_DEFAULT_TTL = int(os.environ.get("KEYS_TOKEN_DEFAULT_TTL", "900"))
# Upper bounds on allowlists, so one key cannot make every request slow.
KEYS_MAX_ALLOWLIST_ENTRIES = int(os.environ.get("KEYS_MAX_ALLOWLIST_ENTRIES", "100"))
# Most live (not revoked) keys, live management tokens and own upstreams one tenant may have: no tenant
# fills the database or the proxy's policy cache.
KEYS_MAX_KEYS_PER_TENANT = int(os.environ.get("KEYS_MAX_KEYS_PER_TENANT", "1000"))
KEYS_MAX_MANAGEMENT_TOKENS_PER_TENANT = int(os.environ.get("KEYS_MAX_MANAGEMENT_TOKENS_PER_TENANT", "50"))
KEYS_MAX_UPSTREAMS_PER_TENANT = int(os.environ.get("KEYS_MAX_UPSTREAMS_PER_TENANT", "100"))
# Upstream base URL of the demo seeded by `seed_demo` (the echo endpoint this site serves).
DEMO_UPSTREAM_URL = os.environ.get("DEMO_UPSTREAM_URL", "http://127.0.0.1:8000/demo/echo")
# Serve the demo echo upstream at /demo/echo (on in debug mode, off in production).
DEMO_ECHO_ENABLED = env_bool("DEMO_ECHO_ENABLED", DEBUG)

# Celery: Redis as broker when set; without a broker, tasks run in-process (embedded default).
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- Background jobs (keys/jobs.py; scheduled by beat, editable in the admin) ---
# Days of hourly usage records kept; older ones are deleted by the daily trim.
KEYS_USAGE_RETENTION_DAYS = int(os.environ.get("KEYS_USAGE_RETENTION_DAYS", "90"))
# Days of audit events kept (0: kept for ever).
KEYS_AUDIT_RETENTION_DAYS = int(os.environ.get("KEYS_AUDIT_RETENTION_DAYS", "365"))
# /readyz calls beat `stale` when no background job succeeded for this many seconds (the usage roll-up
# runs every minute).
OPS_BEAT_STALE_SECONDS = float(os.environ.get("OPS_BEAT_STALE_SECONDS", "180"))
# Without Redis (no worker, no beat), run the jobs on a thread of the server process.
KEYS_INPROCESS_JOBS = env_bool("KEYS_INPROCESS_JOBS", True)
# Seconds between two ticks of that thread.
KEYS_INPROCESS_JOBS_SECONDS = float(os.environ.get("KEYS_INPROCESS_JOBS_SECONDS", "60"))

# Key-sharing flag (keys/sharing.py): a day's distinct client addresses or origins jump above the key's
# baseline (the median of the days before it) when over baseline x FACTOR and baseline + MIN.
KEYS_SHARING_BASELINE_DAYS = int(os.environ.get("KEYS_SHARING_BASELINE_DAYS", "7"))
KEYS_SHARING_JUMP_FACTOR = float(os.environ.get("KEYS_SHARING_JUMP_FACTOR", "3.0"))
KEYS_SHARING_JUMP_MIN = int(os.environ.get("KEYS_SHARING_JUMP_MIN", "20"))

# --- Alerts, webhooks and leaked-key intake (keys/alerting.py, keys/services/webhooks.py) ---
# Allow webhook receivers on loopback and private networks (and http for those only). Off: https to
# public addresses only, as tenants' upstreams. Tests and a private deployment turn it on.
KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK = env_bool("KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK")
# Seconds for one delivery attempt (connect, send, answer).
KEYS_WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("KEYS_WEBHOOK_TIMEOUT_SECONDS", "10"))
# First retry after this many seconds, doubling (at most an hour apart) for KEYS_WEBHOOK_RETRY_FOR_SECONDS.
KEYS_WEBHOOK_RETRY_BASE_SECONDS = int(os.environ.get("KEYS_WEBHOOK_RETRY_BASE_SECONDS", "60"))
KEYS_WEBHOOK_RETRY_FOR_SECONDS = int(os.environ.get("KEYS_WEBHOOK_RETRY_FOR_SECONDS", "86400"))
# An endpoint is disabled (its admins e-mailed) after this many failed attempts in a row.
KEYS_WEBHOOK_DISABLE_AFTER_FAILURES = int(os.environ.get("KEYS_WEBHOOK_DISABLE_AFTER_FAILURES", "20"))
KEYS_MAX_WEBHOOKS_PER_TENANT = int(os.environ.get("KEYS_MAX_WEBHOOKS_PER_TENANT", "20"))
KEYS_MAX_ALERT_RULES_PER_TENANT = int(os.environ.get("KEYS_MAX_ALERT_RULES_PER_TENANT", "100"))
# GitHub secret scanning's public keys, JSON {"<key identifier>": "<PEM>"} (GitHub publishes them at
# https://api.github.com/meta/public_keys/secret_scanning; copy them here, this server fetches nothing).
KEYS_SECRET_SCANNING_PUBLIC_KEYS = os.environ.get("KEYS_SECRET_SCANNING_PUBLIC_KEYS", "{}")

# --- The management API (DESIGN.md "Management API", "Token exchange") ---
REST_FRAMEWORK = {
    # Views choose their authenticators (keys/api/authentication.py); nothing is open by default.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["keys.api.parsers.StrictJSONParser"],
    "EXCEPTION_HANDLER": "keys.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "keys.api.schema.ErrorAwareAutoSchema",
}
SPECTACULAR_SETTINGS = {
    # One name for the role choices that members and the tenant endpoint share.
    "ENUM_NAME_OVERRIDES": {"RoleEnum": "keys.models.Role"},
    "TITLE": "API-key portal: management API",
    "DESCRIPTION": (
        "Manage a tenant's API keys, upstreams and management tokens, and exchange a key's secret for "
        "a short-lived access token.\n\n"
        "**Authentication.** `Authorization: Bearer mt_…` (a management token: it acts as an admin of "
        "its tenant), or a signed-in portal session (unsafe methods need the `X-CSRFToken` header).\n\n"
        "**Tenant.** A token acts for its own tenant. A session user acts for the tenant whose slug the "
        "`X-Tenant` header names, or without that header for their first (oldest) membership; a tenant "
        "they are not a member of answers 403 `permission_denied`. `GET /api/v1/tenant` says which.\n\n"
        "**Roles.** A viewer reads keys, usage and upstreams; a developer also manages keys; an admin "
        "or the owner also manages the tenant's upstreams, its members and its management tokens (tokens "
        "are admin-only, reading included); only an owner grants or takes away the owner role. "
        "Global upstreams are read-only.\n\n"
        "**Scope.** Every object belongs to the caller's tenant; another tenant's answers 404.\n\n"
        '**Errors.** Every error is `{"error": {"code", "message", "request_id"}}` '
        "(plus `fields` for `invalid_request`); every answer carries `X-Request-Id`. A field the caller "
        "may not set (`id`, `tenant`, hashes, timestamps, `revoked_at`) answers 400 naming it."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "keyBasic": {"type": "http", "scheme": "basic", "description": "The key id and its secret."},
            "accessToken": {"type": "http", "scheme": "bearer", "description": "An access token, at_…."},
        }
    },
}
# Failed token exchanges allowed per key id from one client address (past it that address is refused for
# that key; a right secret from elsewhere never is), and attempts of any kind per client address.
KEYS_TOKEN_EXCHANGE_RATE = os.environ.get("KEYS_TOKEN_EXCHANGE_RATE", "30/m")
KEYS_TOKEN_EXCHANGE_IP_RATE = os.environ.get("KEYS_TOKEN_EXCHANGE_IP_RATE", "60/m")
# Longest grace period of a rotated key's old secret, in seconds (30 days).
KEYS_ROTATION_MAX_GRACE = int(os.environ.get("KEYS_ROTATION_MAX_GRACE", str(30 * 86400)))

# CORS for the management API only (the proxy answers its own, per key); no origin unless listed.
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOWED_ORIGINS = env_list("API_CORS_ALLOWED_ORIGINS")
CORS_EXPOSE_HEADERS = ["X-Request-Id", "Retry-After"]
CORS_ALLOW_HEADERS = ["accept", "authorization", "content-type", "x-csrftoken", "x-request-id", "x-tenant"]

# One JSON object a line (python-json-logger) unless LOG_FORMAT=text; text by default under DJANGO_DEBUG
# (`make run`), so people read it. Every line carries the request id when there is one.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text" if DEBUG else "json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=os.environ.get("LOG_LEVEL", "INFO"))

# --- The tenant web portal (portal/) ---
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:key_list"
LOGOUT_REDIRECT_URL = "portal:login"
# Login attempts allowed per client address and, separately, per username (django-ratelimit rate).
PORTAL_LOGIN_RATE = os.environ.get("PORTAL_LOGIN_RATE", "10/m")
# Django admin login attempts allowed per client address and, separately, per username (staff accounts
# can do anything: stricter than the portal's).
ADMIN_LOGIN_RATE = os.environ.get("ADMIN_LOGIN_RATE", "5/m")
# Password-reset requests allowed per client address and, separately, per e-mail (django-ratelimit rate).
PORTAL_RESET_RATE = os.environ.get("PORTAL_RESET_RATE", "5/h")
# Sign-ups allowed per client address (django-ratelimit rate): no mass-made accounts and mail.
PORTAL_SIGNUP_RATE = os.environ.get("PORTAL_SIGNUP_RATE", "10/h")
# Days the e-mail confirmation link mailed at sign-up works ("send again" is limited by PORTAL_RESET_RATE).
PORTAL_CONFIRMATION_DAYS = int(os.environ.get("PORTAL_CONFIRMATION_DAYS", "3"))
# How long a password-reset link works (Django's default is 3 days: too long for a link in a mailbox).
PASSWORD_RESET_TIMEOUT = int(os.environ.get("PORTAL_RESET_LINK_SECONDS", "3600"))
# Days an invitation link works before it expires.
PORTAL_INVITATION_DAYS = int(os.environ.get("PORTAL_INVITATION_DAYS", "7"))
# Invitations a tenant may send (django-ratelimit rate): a stolen admin session cannot spam the world.
PORTAL_INVITATION_RATE = os.environ.get("PORTAL_INVITATION_RATE", "30/h")

# --- E-mail (password resets, invitations) ---
# Printed to the server's console unless an SMTP backend is configured (`make run` shows the links).
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
# Seconds before a stalled SMTP server fails the request instead of hanging it.
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "10"))
# With EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend: the folder the e-mails go to.
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(BASE_DIR / "sent-mail"))
# The sender of the portal's e-mails.
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "API keys <noreply@localhost>")

# --- The proxy (DESIGN.md "The proxy") ---
# One access line per proxied request (logger proxy.access, at the end of the answer); 0 turns it off.
PROXY_ACCESS_LOG = env_bool("PROXY_ACCESS_LOG", True)
# The share of access lines written, 0..1 (answers of 500 and over are always written).
PROXY_ACCESS_LOG_SAMPLE = min(1.0, max(0.0, float(os.environ.get("PROXY_ACCESS_LOG_SAMPLE", "1"))))
# Largest request body relayed upstream, in bytes; larger ones answer 413 before any upstream byte.
PROXY_MAX_BODY_BYTES = int(os.environ.get("PROXY_MAX_BODY_BYTES", str(10 * 1024 * 1024)))
# Seconds a cached key/upstream/token policy is trusted while the Redis push channel is live and has been
# since the policy was loaded (otherwise one second: a revocation reaches every process within a second).
PROXY_POLICY_TTL = float(os.environ.get("PROXY_POLICY_TTL", "300"))
# Most policies of each kind each process keeps in memory (as many again for ids that do not exist);
# the least recently used go first.
PROXY_POLICY_CACHE_ENTRIES = int(os.environ.get("PROXY_POLICY_CACHE_ENTRIES", "50000"))
# Most connections open at once per upstream address, per server worker; a call past it waits for one,
# within its deadline. Each call in flight holds one, so this is also the most calls in flight per
# upstream and worker.
PROXY_POOL_SIZE = int(os.environ.get("PROXY_POOL_SIZE", "1024"))
# Seconds an idle upstream connection is kept for the next call: under the idle timeout of most servers
# (5 s and up), so the proxy closes it before the upstream does and a call never meets a closed one.
PROXY_KEEPALIVE_SECONDS = float(os.environ.get("PROXY_KEEPALIVE_SECONDS", "4"))
# Seconds a checked upstream address is reused before the host is resolved (and checked) again.
PROXY_DNS_CACHE_SECONDS = float(os.environ.get("PROXY_DNS_CACHE_SECONDS", "30"))
# Largest share of a rate limit one process leases from Redis at a time.
PROXY_RATE_LEASE_MAX = int(os.environ.get("PROXY_RATE_LEASE_MAX", "256"))
# Seconds between flushes of usage counters to Redis (0: no flusher thread; tests flush by hand).
PROXY_USAGE_FLUSH_SECONDS = float(os.environ.get("PROXY_USAGE_FLUSH_SECONDS", "1.0"))
# WebSocket relay (proxy/websocket.py). Largest client message relayed upstream, in bytes; a larger one
# gets a JSON-RPC error reply and never reaches the upstream.
PROXY_WS_MAX_MESSAGE_BYTES = int(os.environ.get("PROXY_WS_MAX_MESSAGE_BYTES", str(1024 * 1024)))
# Most WebSocket connections open at once per key, across every process sharing Redis; past it the
# handshake answers 429 too_many_connections.
PROXY_WS_MAX_CONNECTIONS_PER_KEY = int(os.environ.get("PROXY_WS_MAX_CONNECTIONS_PER_KEY", "1000"))
# Seconds a socket may pass with no message either way before the proxy closes it (4408 idle_timeout).
PROXY_WS_IDLE_SECONDS = float(os.environ.get("PROXY_WS_IDLE_SECONDS", "300"))
# Seconds between the proxy's pings to the upstream; no pong within half of it closes the socket
# (1014 upstream_timeout). 0: no pings.
PROXY_WS_PING_SECONDS = float(os.environ.get("PROXY_WS_PING_SECONDS", "20"))
# Seconds between re-checks of every open socket's key, token and allowlists (a revoked, expired or
# suspended key's sockets close within this plus the policy cache's one second at most).
PROXY_WS_RECHECK_SECONDS = float(os.environ.get("PROXY_WS_RECHECK_SECONDS", "0.25"))
# Access-Control-Max-Age of preflight answers, in seconds.
PROXY_CORS_MAX_AGE = int(os.environ.get("PROXY_CORS_MAX_AGE", "600"))
# Load balancers whose X-Forwarded-For is believed (CIDRs, comma-separated); none by default.
PROXY_TRUSTED_PROXIES = env_list("PROXY_TRUSTED_PROXIES")
# Who may read /metrics: client addresses (CIDRs, comma-separated; loopback only by default) and, when
# set, the bearer token they must also send.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", "127.0.0.1/32,::1/128")
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# Bounds on user-agent allowlist entries, checked when a key is saved (keys/validators.py), so matching
# stays cheap on every request: the longest pattern, its most `*`s, and the most patterns per key.
KEYS_USER_AGENT_MAX_LENGTH = int(os.environ.get("KEYS_USER_AGENT_MAX_LENGTH", "256"))
KEYS_USER_AGENT_MAX_WILDCARDS = int(os.environ.get("KEYS_USER_AGENT_MAX_WILDCARDS", "8"))
KEYS_MAX_USER_AGENTS = int(os.environ.get("KEYS_MAX_USER_AGENTS", "20"))
