"""Livermore settings: one file, read from the environment.

Development needs nothing set: local PostgreSQL and Redis, the simulator venue, and secrets
generated once per user and machine (DEV_SECRETS_FILE, never in the repository). Production
(DJANGO_ENV=production) refuses to start without its secrets.
"""

import ipaddress
import os
import secrets
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import quote

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

django_stubs_ext.monkeypatch()  # allows ModelAdmin[Model] and friends at run time

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

# The replaced systems' environment variable names (docs/migration.md), read when the new name is
# unset and reported once at start as deprecated (livermore.apps). They are copied to the new names
# in os.environ, so the code that reads those (venue adapters, Procfile) sees them too.
LEGACY_ENV_ALIASES = {
    "NODE_ENV": "DJANGO_ENV",
    "API_HOST": "HOST",
    "API_PORT": "PORT",
    "DISCORD_LIVERMORE_BOT": "SYSTEM_NOTIFICATION_WEBHOOK_URL",
    "OANDA_API_KEY": "OANDA_TOKEN",
    "Coinbase_ApiKeyId": "COINBASE_API_KEY_NAME",
    "Coinbase_EcPrivateKeyPem": "COINBASE_PRIVATE_KEY_PEM",
    "LOG_FILE_ENABLED": "LOG_FILE",
    "LOG_PERF_ENABLED": "LOG_SLOW_MS",
}
LEGACY_DATABASE_ENV = (
    "DATABASE_HOST",
    "DATABASE_PORT",
    "LIVERMORE_DATABASE_NAME",
    "DATABASE_LIVERMORE_USERNAME",
    "DATABASE_LIVERMORE_PASSWORD",
)
LEGACY_ENV_USED: list[tuple[str, str]] = []  # (old name, new name) read at start


def _legacy_value(old: str, value: str) -> str | None:
    """An old variable's value in the new one's terms (None: it asks for nothing)."""
    if old == "NODE_ENV":
        return "production" if value.strip().lower() == "production" else "development"
    if old in {"LOG_FILE_ENABLED", "LOG_PERF_ENABLED"}:
        if value.strip().lower() not in {"1", "true", "yes", "on"}:
            return None
        return str(VAR_DIR / "log" / "livermore.log") if old == "LOG_FILE_ENABLED" else "500"
    return value


def _legacy_env_apply() -> None:
    for old, new in LEGACY_ENV_ALIASES.items():
        if old in os.environ and new not in os.environ:
            value = _legacy_value(old, os.environ[old])
            if value is not None:
                os.environ[new] = value
            LEGACY_ENV_USED.append((old, new))
    legacy_db = [name for name in LEGACY_DATABASE_ENV if os.environ.get(name)]
    if legacy_db and "DATABASE_URL" not in os.environ:
        user = quote(os.environ.get("DATABASE_LIVERMORE_USERNAME", "postgres"), safe="")
        password = os.environ.get("DATABASE_LIVERMORE_PASSWORD", "")
        credentials = f"{user}:{quote(password, safe='')}" if password else user
        host = os.environ.get("DATABASE_HOST", "127.0.0.1")
        port = os.environ.get("DATABASE_PORT", "5432")
        name = quote(os.environ.get("LIVERMORE_DATABASE_NAME", "livermore"), safe="")
        os.environ["DATABASE_URL"] = f"postgres://{credentials}@{host}:{port}/{name}"
        LEGACY_ENV_USED.extend((old, "DATABASE_URL") for old in legacy_db)
    if "LOG_LEVEL" in os.environ:  # the old systems wrote winston's names: "info", "verbose"
        level = os.environ["LOG_LEVEL"].strip().upper()
        os.environ["LOG_LEVEL"] = {"SILLY": "DEBUG", "VERBOSE": "DEBUG", "HTTP": "INFO"}.get(level, level)


_legacy_env_apply()

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(f"DJANGO_ENV must be development or production, not {DJANGO_ENV!r}")
PRODUCTION = DJANGO_ENV == "production"
# A demo deployment may price from simulated venues (the simulator, the FIX LP simulator) and seeds
# them; a live one never does: runmarket refuses to start with a simulated venue enabled, and no
# fill, trigger or stop-out happens on a simulated price. Development is a demo unless told otherwise.
LIVERMORE_DEMO = env.bool("LIVERMORE_DEMO", default=not PRODUCTION)
# Per user and machine, like the development database they encrypt: every checkout on this machine
# shares them, so a second clone can still read what the first one stored. Never in the repository.
DEV_SECRETS_FILE = Path(
    env.str("LIVERMORE_DEV_SECRETS", default=str(Path.home() / ".config" / "livermore" / "dev-secrets.env"))
)
SECRET_NAMES = ("SECRET_KEY", "JWT_SIGNING_KEY", "FIELD_ENCRYPTION_KEY")


def _dev_secrets() -> dict[str, str]:
    """Secrets for development, generated on first use and kept out of the repository."""
    if not DEV_SECRETS_FILE.exists():
        DEV_SECRETS_FILE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        from cryptography.fernet import Fernet

        values = {
            "SECRET_KEY": secrets.token_urlsafe(50),
            "JWT_SIGNING_KEY": secrets.token_urlsafe(48),
            "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        }
        tmp = DEV_SECRETS_FILE.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        tmp.chmod(0o600)
        tmp.replace(DEV_SECRETS_FILE)
    return dict(line.split("=", 1) for line in DEV_SECRETS_FILE.read_text().split())


def _secret(name: str, *, min_bytes: int = 0) -> str:
    value = env.str(name, default="")
    if not value:
        if PRODUCTION:
            raise ImproperlyConfigured(f"{name} must be set in production")
        value = _dev_secrets()[name]
    if len(value.encode()) < min_bytes:
        raise ImproperlyConfigured(f"{name} must be at least {min_bytes} bytes")
    return value


SECRET_KEY = _secret("SECRET_KEY", min_bytes=50 if PRODUCTION else 0)
JWT_SIGNING_KEY = _secret("JWT_SIGNING_KEY", min_bytes=32)
FIELD_ENCRYPTION_KEYS = [k.strip() for k in _secret("FIELD_ENCRYPTION_KEY").split(",") if k.strip()]


def _check_fernet_keys(keys: list[str]) -> None:
    """Fail at start, not at the first encrypted read, when a key is not a Fernet key."""
    from cryptography.fernet import Fernet

    try:
        for k in keys:
            Fernet(k.encode())
    except ValueError as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY must be urlsafe-base64 32-byte Fernet keys") from exc


_check_fernet_keys(FIELD_ENCRYPTION_KEYS)

DEBUG = env.bool("DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
# Proxies (addresses or networks) whose X-Forwarded-For/-Proto the web server believes; none by
# default: the TCP peer is the client (kernel/clientip.py).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError as exc:
        raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}") from exc

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "rest_framework_simplejwt.token_blacklist",
    "livermore",
    "users",
    "marketdata",
    "brokerage",
    "alerts",
    "portfolio",
    "fix",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "kernel.errors.OutageMiddleware",
    "kernel.hostile.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "users.middleware.UserTimezoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "kernel.clientip.ClientAddressMiddleware",
]

# Axes first: it refuses a locked-out login before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "users.security.AddressLoginLimitBackend",
    "users.backends.CachedPermissionsBackend",
    "brokerage.auth.AccountNumberBackend",  # clients may log in with a trading account number
]

ROOT_URLCONF = "livermore.urls"
ASGI_APPLICATION = "livermore.asgi.application"
WSGI_APPLICATION = None
AUTH_USER_MODEL = "users.User"

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

DATABASE_URL = env.str("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/livermore")
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
# Django's PostgreSQL backend with a pool health check that costs no round trip (kernel/postgresql).
DATABASES["default"]["ENGINE"] = "kernel.postgresql"
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Django sets psycopg's prepare_threshold to None (never prepare) unless told otherwise. Its own
# cursors bind client-side and never prepare anyway; the dealing hot path's server-binding cursors
# (kernel/sql.py) need preparation on, or PostgreSQL parses and plans each of their statements on
# every call (measured: 1.95 ms of database CPU per market order without, 0.81 ms with).
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5
# Group commit of orders (brokerage/services/dealer.py): a batch of orders waits at most this long
# for more to share its commit (0 turns batching off: each order commits in its caller's thread),
# holds at most DEALING_BATCH_MAX of them, and a process runs DEALING_DEALERS dealer threads,
# each holding a database connection of its own (the pool has room for them on top of DB_POOL_MAX).
DEALING_BATCH_MS = env.float("DEALING_BATCH_MS", default=2.0)
DEALING_BATCH_MAX = env.int("DEALING_BATCH_MAX", default=64)
DEALING_DEALERS = env.int("DEALING_DEALERS", default=2)
if env.bool("DB_POOL", default=False):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN", default=2),
        "max_size": env.int("DB_POOL_MAX", default=16) + (DEALING_DEALERS if DEALING_BATCH_MS > 0 else 0),
        "timeout": 10,
    }
# Threads running HTTP requests' sync code in a web process (livermore/asgi_threads.py): no more than
# the database pool can serve at once.
ASGI_REQUEST_THREADS = env.int("ASGI_REQUEST_THREADS", default=env.int("DB_POOL_MAX", default=16))
# Requests waiting for one of those threads: past ASGI_QUEUE_MAX waiting, or after ASGI_QUEUE_WAIT_S
# in the queue, a request is shed with 503 and Retry-After instead of waiting on a stuck database.
ASGI_QUEUE_MAX = env.int("ASGI_QUEUE_MAX", default=256)
ASGI_QUEUE_WAIT_S = env.float("ASGI_QUEUE_WAIT_S", default=5.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Namespaces every Redis key and pub/sub channel, so two checkouts can share one Redis server.
REDIS_PREFIX = env.str("REDIS_PREFIX", default="livermore")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_PREFIX,
        "TIMEOUT": 300,
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_PREFIX}:ch"},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "users.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "kernel.schema.AutoSchema",
    "EXCEPTION_HANDLER": "kernel.errors.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "kernel.negotiation.ContentNegotiation",
    "DEFAULT_PARSER_CLASSES": [
        "kernel.parsers.JSONParser",
        "kernel.parsers.FormParser",
        "kernel.parsers.MultiPartParser",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "kernel.throttling.AnonRateThrottle",
        "kernel.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON", default="60/min"),
        "user": env.str("THROTTLE_USER", default="1200/min"),
        "auth": env.str("THROTTLE_AUTH", default="30/min"),
        "orders": env.str("THROTTLE_ORDERS", default="600/min"),
        "portfolio_sync": env.str("THROTTLE_PORTFOLIO_SYNC", default="6/min"),
    },
    "COERCE_DECIMAL_TO_STRING": True,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=5)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "UPDATE_LAST_LOGIN": False,
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # Every token carries a hash of the user's password hash, checked on each use (REST and stream):
    # a password change ends all of them at once, not when the access token expires.
    "CHECK_REVOKE_TOKEN": True,
}

# Brute-force lockout on the admin login and the token endpoint, per (username, client IP).
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "users.security.lockout_response"
# The web server resolves the client (trusted proxies only) into REMOTE_ADDR; a raw X-Forwarded-For
# from the client must not let it pick a fresh IP per attempt.
AXES_CLIENT_IP_CALLABLE = "kernel.clientip.client_ip"
# Password spraying: failed logins per client address across usernames, admin and token endpoint.
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=20)

# Staff sign in to the admin with a password and a TOTP code (or a one-use recovery code); on by
# default in production. `manage.py otp_enrol USERNAME` gives a staff user their device.
ADMIN_2FA_REQUIRED = env.bool("ADMIN_2FA_REQUIRED", default=PRODUCTION)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Livermore")
OTP_RECOVERY_CODES = 10

IDEMPOTENCY_KEY_TTL = timedelta(hours=24)


# Four-eyes on money: a cash operation above its currency's threshold waits for a second operator's
# approval. FOUR_EYES_THRESHOLDS overrides per currency, e.g. "JPY=1500000,BTC=0.2".
def _threshold(name: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal amount, not {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be a non-negative amount, not {raw!r}")
    return value


FOUR_EYES_THRESHOLD = _threshold("FOUR_EYES_THRESHOLD", env.str("FOUR_EYES_THRESHOLD", default="10000"))
FOUR_EYES_THRESHOLDS = {
    currency.strip().upper(): _threshold(f"FOUR_EYES_THRESHOLDS[{currency.strip()}]", amount)
    for currency, _, amount in (
        item.partition("=") for item in env.list("FOUR_EYES_THRESHOLDS", default=[]) if item.strip()
    )
}

# The kill switch's automatic states (the "kill switch watch" beat job, docs/operators.md#kill-switch):
# an instrument without a tradable price for this long is halted (0: never); the house's realized loss
# of the UTC day past its limit in a currency ("USD=50000,EUR=40000"; none: never) puts everything
# under KILL_SWITCH_DAILY_LOSS_STATE; with auto-resume each goes back to active once its cause clears.
KILL_SWITCH_STALE_PRICE_S = env.int("KILL_SWITCH_STALE_PRICE_S", default=60)
if KILL_SWITCH_STALE_PRICE_S < 0:
    raise ImproperlyConfigured("KILL_SWITCH_STALE_PRICE_S must be 0 (off) or a number of seconds")
KILL_SWITCH_DAILY_LOSS_LIMIT = {
    currency.strip().upper(): _threshold(f"KILL_SWITCH_DAILY_LOSS_LIMIT[{currency.strip()}]", amount)
    for currency, _, amount in (
        item.partition("=") for item in env.list("KILL_SWITCH_DAILY_LOSS_LIMIT", default=[]) if item.strip()
    )
}
KILL_SWITCH_DAILY_LOSS_STATE = env.str("KILL_SWITCH_DAILY_LOSS_STATE", default="reduce_only")
if KILL_SWITCH_DAILY_LOSS_STATE not in ("reduce_only", "halted"):
    raise ImproperlyConfigured("KILL_SWITCH_DAILY_LOSS_STATE must be reduce_only or halted")
KILL_SWITCH_AUTO_RESUME = env.bool("KILL_SWITCH_AUTO_RESUME", default=True)

# The daily swap rollover (UTC hour); the "accrue swaps" beat job runs at it (livermore/schedules.py).
SWAP_ROLLOVER_HOUR_UTC = env.int("SWAP_ROLLOVER_HOUR_UTC", default=21)

SPECTACULAR_SETTINGS = {
    "TITLE": "Livermore API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Separate request and response components: read-only fields (an alert rule's full status) are
    # in the response only, and the request shows only what a client may send.
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "AccountStatusEnum": "brokerage.models.AccountStatus",
        "OrderStatusEnum": "brokerage.models.OrderStatus",
        "PositionStatusEnum": "brokerage.models.PositionStatus",
        "ReasonEnum": "brokerage.models.Reason",
        "AlertRuleStatusEnum": "alerts.models.AlertRule.Status",
        "AlertRuleSettableStatusEnum": "alerts.api.SETTABLE_STATUSES",
    },
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = f"{REDIS_PREFIX}.default"
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:", "visibility_timeout": 3600}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# Dotted paths of callables `(SelectedQuote) -> None` that the market loop calls on every quote. One
# with a stop() method has it called when the loop shuts down, after the last quote, and must start
# again on its next quote (a process may run the loop more than once).
QUOTE_LISTENERS: list[str] = ["brokerage.watcher.quote_listener", "alerts.listeners.on_quote"]
# Dotted paths of callables `(Bar) -> None` called with every closed candle, after it is stored, in the
# market loop's candle writer thread (so they may use the database; keep them quick).
CANDLE_LISTENERS: list[str] = ["alerts.listeners.on_candle_close"]
# Dotted paths of callables `(kernel.sysevents.SystemEvent) -> None` called with every system event
# (venue down, FIX logout, stop-out, ...) from any process and thread; they must not block.
SYSTEM_EVENT_LISTENERS: list[str] = ["alerts.listeners.on_system_event"]
# Dotted paths of admin inlines of a user's one-to-one preferences rows, shown on the user's admin page
# after their settings (the users app cannot import the trading apps that own them).
USER_ADMIN_INLINES: list[str] = ["alerts.admin.AlertPreferencesInline"]
# Dotted paths of callables `() -> Iterable[prometheus Metric]` read at each metrics scrape.
METRICS_COLLECTORS: list[str] = [
    "marketdata.metrics.market_metrics",
    "fix.metrics.fix_metrics",
    "alerts.metrics.outbox_metrics",
    "livermore.metrics.celery_queue_metrics",
]
# The bearer token a Prometheus scraper sends to GET /metrics; unset, the endpoint answers 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Dotted path of the LP gateway (brokerage/router.py LpGateway): routes each order to A- or B-Book and
# cancels routed ones; the fix app's applies its routing rules.
ORDER_GATEWAY = env.str(
    "ORDER_GATEWAY",
    default="fix.routing.GATEWAY" if "fix" in INSTALLED_APPS else "brokerage.router.INTERNAL",
)

# /ws/v1/stream channel kinds -> StreamChannel classes (see marketdata/streams.py).
STREAM_CHANNELS = {
    "quotes": "marketdata.streams.QuotesChannel",
    "indicators": "alerts.streams.IndicatorsChannel",
    "account": "brokerage.streams.AccountChannel",
    "candles": "marketdata.streams.CandlesChannel",
    "alerts": "alerts.streams.AlertsChannel",
}
# Per-connection limits of /ws/v1/stream (docs/stream.md).
STREAM_MAX_RATE = env.float("STREAM_MAX_RATE", default=10.0)  # quote frames per second per symbol
STREAM_QUEUE_FRAMES = env.int("STREAM_QUEUE_FRAMES", default=1000)
STREAM_SLOW_CONSUMER_S = env.float("STREAM_SLOW_CONSUMER_S", default=5.0)
STREAM_AUTH_TIMEOUT_S = env.float("STREAM_AUTH_TIMEOUT_S", default=5.0)  # anonymous connections close after
STREAM_CANDLE_SNAPSHOT_BARS = 100

# Coinbase Advanced Trade REST endpoint for portfolio mirroring (tests point it at a local fake).
COINBASE_REST_URL = env.str("COINBASE_REST_URL", default="https://api.coinbase.com")

# Market loop and stream tuning.
TICKER_CACHE_TTL = 60
ORDER_BOOK_CACHE_TTL = 30
CANDLE_CACHE_TTL = 24 * 3600
CANDLE_CACHE_SIZE = env.int("CANDLE_CACHE_SIZE", default=1000)  # bars kept per symbol and timeframe
# Closed bars the market loop makes sure every enabled instrument has on every timeframe, at start
# and after a reconnect, by backfilling from a venue with history: enough to seed MACD-V.
CANDLE_WARMUP_BARS = env.int("CANDLE_WARMUP_BARS", default=200)
if CANDLE_WARMUP_BARS < 0:
    raise ImproperlyConfigured("CANDLE_WARMUP_BARS must be 0 (no warm-up) or more")
TICK_RETENTION_DAYS = env.int("TICK_RETENTION_DAYS", default=30)
TICK_FLUSH_INTERVAL_S = env.float("TICK_FLUSH_INTERVAL_S", default=0.5)
TICK_BUFFER_MAX = env.int("TICK_BUFFER_MAX", default=1_000_000)  # ticks held through a database outage
# The market and beat leases: renewed every third of it, retried through a Redis outage while still
# valid (an outage up to about two thirds of it is survived), and a standby takes over within half a
# second of its expiry when a leader dies (failover in about the TTL).
MARKET_LEASE_TTL_S = env.float("MARKET_LEASE_TTL_S", default=4.0)
READY_QUOTE_MAX_AGE_S = env.int("READY_QUOTE_MAX_AGE_S", default=30)
# QuickFIX sequence-number stores (never the messages: PersistMessages=N); outside the repository.
FIX_STORE_DIR = Path(env.str("FIX_STORE_DIR", default=str(VAR_DIR / "fix")))
FIX_LEASE_TTL_S = env.int("FIX_LEASE_TTL_S", default=10)
FIX_MESSAGE_KEEP_DAYS = env.int("FIX_MESSAGE_KEEP_DAYS", default=7)
FIX_MESSAGE_KEEP_PER_SESSION = env.int("FIX_MESSAGE_KEEP_PER_SESSION", default=200_000)
# A quote stamped further than this ahead of its receipt is refused (a bad venue clock would stall bars).
QUOTE_MAX_FUTURE_S = env.float("QUOTE_MAX_FUTURE_S", default=60.0)

# Alerts: Discord delivery (webhook hosts allowed, timeouts, retries) and rule evaluation.
ALERTS_WEBHOOK_HOSTS = env.list(
    "ALERTS_WEBHOOK_HOSTS", default=["discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"]
)
ALERTS_DISCORD_TIMEOUT_S = env.float("ALERTS_DISCORD_TIMEOUT_S", default=10.0)
ALERTS_DELIVERY_MAX_ATTEMPTS = env.int("ALERTS_DELIVERY_MAX_ATTEMPTS", default=8)
ALERTS_DELIVERY_BACKOFF_S = env.float("ALERTS_DELIVERY_BACKOFF_S", default=2.0)
ALERTS_DELIVERY_BACKOFF_MAX_S = env.float("ALERTS_DELIVERY_BACKOFF_MAX_S", default=600.0)
ALERTS_MACDV_COOLDOWN_S = env.float("ALERTS_MACDV_COOLDOWN_S", default=300.0)
ALERTS_LIVE_QUEUE_MAX = env.int("ALERTS_LIVE_QUEUE_MAX", default=10_000)
ALERTS_LIVE_REFRESH_S = env.float("ALERTS_LIVE_REFRESH_S", default=5.0)
ALERTS_BAR_CATCHUP_MAX = env.int("ALERTS_BAR_CATCHUP_MAX", default=60)
ALERTS_DELIVERY_MAX_RATE_LIMITED = env.int("ALERTS_DELIVERY_MAX_RATE_LIMITED", default=20)
ALERTS_DISCORD_INVALID_LIMIT = env.int("ALERTS_DISCORD_INVALID_LIMIT", default=8000)
# A pending notification this overdue lost its delivery task (the requeue job sends it again).
ALERTS_REQUEUE_GRACE_S = env.float("ALERTS_REQUEUE_GRACE_S", default=60.0)
# System notifications of one kind to one channel within this window go out as one message (a burst of
# 20 venues going stale is one message listing them); the first waits this long before it is sent.
SYSTEM_NOTIFICATION_GROUP_S = env.float("SYSTEM_NOTIFICATION_GROUP_S", default=10.0)
# Failed outbox rows (dead letters) in the last day above which the hourly check notifies.
SYSTEM_NOTIFICATION_DEAD_LETTERS_MAX = env.int("SYSTEM_NOTIFICATION_DEAD_LETTERS_MAX", default=0)

# A system notification webhook (Discord); the old DISCORD_LIVERMORE_BOT. Never logged.
SYSTEM_NOTIFICATION_WEBHOOK_URL = env.str("SYSTEM_NOTIFICATION_WEBHOOK_URL", default="")

# Logging (docs/operations.md): JSON lines in production, readable (coloured on a terminal) lines in
# development; structured fields passed as `extra` (venue, symbol, account, order, session); every
# line goes through the secret filter. LOG_FILE adds a rotating file; LOG_SLOW_MS (0: off) logs
# HTTP requests slower than it on the `livermore.slow` logger.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "readable")
if LOG_FORMAT not in {"json", "readable"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or readable, not {LOG_FORMAT!r}")
LOG_FILE = env.str("LOG_FILE", default="")
LOG_FILE_MAX_BYTES = env.int("LOG_FILE_MAX_BYTES", default=50 * 1024 * 1024)
LOG_FILE_BACKUPS = env.int("LOG_FILE_BACKUPS", default=10)
LOG_SLOW_MS = env.int("LOG_SLOW_MS", default=0)
if LOG_SLOW_MS < 0:
    raise ImproperlyConfigured("LOG_SLOW_MS must be 0 (off) or more")
_log_handlers: dict[str, dict[str, object]] = {
    "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["secrets"]}
}
if LOG_FILE:
    Path(LOG_FILE).parent.mkdir(parents=True, exist_ok=True)
    _log_handlers["file"] = {
        "class": "logging.handlers.RotatingFileHandler",
        "filename": LOG_FILE,
        "maxBytes": LOG_FILE_MAX_BYTES,
        "backupCount": LOG_FILE_BACKUPS,
        "encoding": "utf-8",
        "formatter": "json",
        "filters": ["secrets"],
    }
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"secrets": {"()": "kernel.logging.SecretFilter"}},
    "formatters": {
        "readable": {"()": "kernel.logging.ReadableFormatter"},
        "json": {"()": "kernel.logging.JsonFormatter"},
    },
    "handlers": _log_handlers,
    "root": {"handlers": list(_log_handlers), "level": LOG_LEVEL},
    "loggers": {
        # Replaces Django's own console and mail handlers: its lines go through the secret filter too.
        "django": {"level": LOG_LEVEL},
        "django.db.backends": {"level": "INFO"},
        "daphne": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}
if LOG_SLOW_MS:
    MIDDLEWARE.insert(0, "kernel.logging.SlowRequestMiddleware")

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"
