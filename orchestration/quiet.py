"""The environment that keeps the stack quiet and offline: telemetry off (MLflow, Great
Expectations, Dagster and anything honouring DO_NOT_TRACK), Hugging Face without network look-ups.
The demo's `dagster` subprocess and the test suite both run under it; no import here pulls in
the orchestration stack."""

QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DAGSTER_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
