"""Settings, read from environment variables.

Defaults are the embedded setup: SQLite under ``var/``, a broker on the local
file system, a secret key generated once and kept under ``var/``. Production
(``DJANGO_ENV=production``) requires a real ``SECRET_KEY`` and ``ALLOWED_HOSTS``
and turns on the HTTPS-behind-a-proxy settings that ``check --deploy`` asks for.
Every variable is listed in the README.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    BROKER_SCHEMES,
    DATABASE_SCHEMES,
    RESULT_SCHEMES,
    database_config,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_str,
    env_url,
)
from config.secret import local_secret_key
from federation.core.private_files import private_file, private_folder

BASE_DIR = Path(__file__).resolve().parent.parent

DJANGO_ENV = env_choice("DJANGO_ENV", "local", {"local", "production"})
PRODUCTION = DJANGO_ENV == "production"

# Local state (SQLite file, broker folders, secret key, demo sites) lives here.
# Readable by this user only: nothing of it is for anyone else on the machine.
VAR_DIR = private_folder(Path(env_str("VAR_DIR", str(BASE_DIR / "var"))).resolve())  # type: ignore[arg-type]

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if SECRET_KEY is None:
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DJANGO_ENV=production: set it to a long "
            "random string (python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    SECRET_KEY = local_secret_key(VAR_DIR / "secret_key")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS is required when DJANGO_ENV=production: a comma-separated "
        "list of the host names the site is served under."
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Serve static files from gunicorn/runserver alike, DEBUG or not.
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",
    "federation",
    "django.contrib.humanize",
    "dashboard",
    "worker",
]

MIDDLEWARE = [
    # First: it sees every response, and makes the API's refusals JSON.
    "federation.api.JsonRefusals",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

# --- Login throttling (django-axes) ---------------------------------------------
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
# After LOGIN_FAILURE_LIMIT wrong passwords from one address, that address's logins are
# refused (429, no password hashed) for LOGIN_COOLOFF_MINUTES; a good login resets it.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no banner at every start; lockouts are still logged
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Behind a reverse proxy every request comes from the proxy: the client's address is the
# one the proxy added to X-Forwarded-For (TRUSTED_PROXIES: how many proxies add one).
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 1 if PRODUCTION else 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "config.client_ip.client_ip"

# What this process serves: everything (one pool, the default), or the site API alone
# (SERVE=api: a worker pool of its own, behind a proxy that sends it /api/, so page
# traffic cannot starve the sites' requests).
SERVE = env_choice("SERVE", "all", {"all", "api"})
ROOT_URLCONF = "config.api_urls" if SERVE == "api" else "config.urls"
# The URL sites reach the API at, for the command a site's owner is given (default: the
# address the owner's browser used).
SITE_API_URL = env_url("SITE_API_URL", None, {"http", "https"})
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/accounts/landing/"  # each role where its work is
LOGOUT_REDIRECT_URL = "/"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASE_URL = env_url("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}", DATABASE_SCHEMES)
DATABASES = {"default": database_config(DATABASE_URL)}  # type: ignore[arg-type]
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 0, minimum=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web app, the coordinator and the demo write from separate processes: wait for
    # a lock instead of failing, and take the write lock up front (no upgrade deadlock).
    # https://docs.djangoproject.com/en/5.2/ref/databases/#database-is-locked-errors
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    # A file, not memory, so worker processes started by tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
    _database_file = Path(str(DATABASES["default"]["NAME"]))
    if _database_file.parent.is_dir() and str(_database_file) != ":memory:":
        private_file(_database_file)  # before SQLite creates it world-readable
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))  # type: ignore[arg-type]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed files in production; plain finder lookups elsewhere so
    # the app runs without a collectstatic step.
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # plotly.js from the installed plotly package: the pages need no internet.
    "dashboard.finders.PlotlyFinder",
]
# Without collectstatic (local runs), WhiteNoise serves straight from the apps.
WHITENOISE_USE_FINDERS = not PRODUCTION

# Site API: how many requests of one web process may wait for work at once (long polls).
# Each holds a thread: keep it below the threads per process (gunicorn --threads).
API_LONG_POLLS = env_int("API_LONG_POLLS", 12, minimum=0)

# How long a federation's computed progress.json is served to every poller with the same
# view of it: fifty browsers polling cost one computation a second, not fifty.
PROGRESS_CACHE_SECONDS = env_int("PROGRESS_CACHE_MS", 1000, minimum=0) / 1000

# Uploaded contributions and model versions (not served publicly: members download
# models through the API, which checks membership).
MEDIA_ROOT = private_folder(Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media"))))  # type: ignore[arg-type]
MEDIA_URL = "/media/"
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# HTTPS behind a reverse proxy that sets X-Forwarded-Proto.
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # The health check is probed over plain HTTP by the container runtime.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# --- Celery -----------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
REDIS_URL = env_url("REDIS_URL", None, {"redis", "rediss"})
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_url("CELERY_BROKER_URL", REDIS_URL or "filesystem://", BROKER_SCHEMES)
if CELERY_BROKER_URL.startswith("filesystem://"):  # type: ignore[union-attr]
    # kombu's file-system transport: every process on this machine shares the
    # same folders, so the web server, coordinator and site workers talk to each
    # other with no broker server. Producers and consumers use one folder.
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    # The same transport, writing each message atomically (see worker/broker.py).
    CELERY_BROKER_TRANSPORT = "worker.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # How often a consumer looks for new messages (kombu's default is 1 s): a round's
        # aggregation waits for this once, after its last stage.
        "polling_interval": 0.02,
    }
_default_results = REDIS_URL or f"file://{VAR_DIR / 'celery-results'}"
CELERY_RESULT_BACKEND = env_url("CELERY_RESULT_BACKEND", _default_results, RESULT_SCHEMES)
if CELERY_RESULT_BACKEND.startswith("file://"):  # type: ignore[union-attr]
    Path(CELERY_RESULT_BACKEND[len("file://") :]).mkdir(parents=True, exist_ok=True)  # type: ignore[index]
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_DEFAULT_QUEUE = "coordinator"
# A task is acknowledged after it ran, so a worker killed mid-task hands it to
# the next worker; tasks are written to be safe to run twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 30 * 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 35 * 60, minimum=1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"}),
    },
    "loggers": {"django": {"level": "INFO", "propagate": True}},
}
if CELERY_BROKER_URL.startswith("filesystem://"):  # type: ignore[union-attr]
    # Celery hands kombu no host name for the file-system broker, which has none;
    # kombu warns about it on every connection.
    LOGGING["loggers"]["kombu.connection"] = {"level": "ERROR"}  # type: ignore[index]
