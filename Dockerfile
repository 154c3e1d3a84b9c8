# syntax=docker/dockerfile:1
# The Azure Functions app: API (AsgiFunctionApp), router and azure-ai triggers, plus the dashboard and
# the migration Job, which reuse this image with another command (k8s/). Build from the repository root:
#   docker build -t <registry>/speechflow-functions:<tag> .
FROM mcr.microsoft.com/azure-functions/python:4-python3.11

ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    FUNCTIONS_WORKER_RUNTIME=python \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# The host's home (/home) must be writable by the non-root user: function keys, logs, data.
RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid app --home-dir /home --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /home/site/wwwroot /home/LogFiles /home/data \
    && chown -R app:app /home

WORKDIR /home/site/wwwroot
COPY --chown=app:app function_app.py host.json alembic.ini ./
COPY --chown=app:app shared ./shared
COPY --chown=app:app functions ./functions
COPY --chown=app:app migrations ./migrations
COPY --chown=app:app dashboard ./dashboard

USER 1000:1000
EXPOSE 80
