"""Settings of the django-revproxy baseline: the product's middleware stack (Django's defaults), no database.

The product's proxy runs behind that same stack, so the two differ only in the proxy view itself.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "bench")
DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

# The upstream every request is relayed to (bench/run.py sets it).
BENCH_UPSTREAM_URL = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8080/")
# Connections kept per upstream, as the product's PROXY_POOL_SIZE (django-revproxy's own default is 1).
BENCH_POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "32"))

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "revproxy",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "revproxy_site.urls"
WSGI_APPLICATION = "revproxy_site.wsgi.application"
DATABASES = {}  # the proxy view never queries; sessions and auth stay lazy
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
