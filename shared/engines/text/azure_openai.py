"""Azure OpenAI adapter: the openai SDK's `AzureOpenAI` on a deployment (AZURE_OPENAI_DEPLOYMENT),
authenticated by API key or, without one, by an Entra ID token from azure-identity."""

from __future__ import annotations

import openai

from shared.core.config import LlmSettings
from shared.core.errors import ConfigurationError
from shared.engines.text.openai_chat import OpenAIChat

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


def azure_openai_client(settings: LlmSettings) -> openai.AzureOpenAI:
    if not settings.azure_openai_endpoint:
        raise ConfigurationError("AZURE_OPENAI_ENDPOINT is not set")
    endpoint = settings.azure_openai_endpoint
    if settings.azure_openai_api_key is not None:
        return openai.AzureOpenAI(
            azure_endpoint=endpoint,
            api_version=settings.azure_openai_api_version,
            api_key=settings.azure_openai_api_key.get_secret_value(),
            timeout=settings.timeout_seconds,
            max_retries=0,
        )
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider

    return openai.AzureOpenAI(
        azure_endpoint=endpoint,
        api_version=settings.azure_openai_api_version,
        azure_ad_token_provider=get_bearer_token_provider(DefaultAzureCredential(), COGNITIVE_SERVICES_SCOPE),
        timeout=settings.timeout_seconds,
        max_retries=0,
    )


def azure_openai_chat(settings: LlmSettings) -> OpenAIChat:
    """The deployment name is the model the SDK puts in the request path."""
    return OpenAIChat(
        azure_openai_client(settings),
        engine="azure-openai",
        model=settings.azure_openai_deployment,
        max_attempts=settings.max_attempts,
    )
