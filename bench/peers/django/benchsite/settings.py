"""Settings of the Django peer: Channels with the in-memory layer, SQLite in WAL mode."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "bench-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = ["daphne", "channels", "chat"]
MIDDLEWARE = []
ROOT_URLCONF = "benchsite.urls"
ASGI_APPLICATION = "benchsite.asgi.application"

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

SYNCHRONOUS = os.environ.get("BENCH_SQLITE_SYNCHRONOUS", "FULL").upper()
if SYNCHRONOUS not in ("FULL", "NORMAL"):
    raise ValueError(f"BENCH_SQLITE_SYNCHRONOUS={SYNCHRONOUS}")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB", str(BASE_DIR / "bench.db")),
        # The same durability as banter and the Node peer: WAL, a synced commit per message
        # (bench/run passes BENCH_SQLITE_SYNCHRONOUS=NORMAL when asked to).
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;" % SYNCHRONOUS,
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
