"""Test settings: the production settings with a throwaway secret key and fast password hashing."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "insecure-test-only-key")
os.environ.setdefault("DJANGO_SECURE", "0")

from config.settings import *  # noqa: E402,F403

# Password hashing is deliberately slow in production; tests create many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Keep the test run's cache entries apart from anything else using the same Redis.
if REDIS_URL:  # noqa: F405
    CACHES["default"]["KEY_PREFIX"] = f"test-{os.getpid()}"  # noqa: F405
# No background usage flusher in the test process: tests that need the counters flush them.
PROXY_USAGE_FLUSH_SECONDS = 0
# No in-process job thread: tests run the jobs themselves.
KEYS_INPROCESS_JOBS = False
