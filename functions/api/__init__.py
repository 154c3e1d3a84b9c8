"""The HTTP API: `create_app(settings)`."""

from functions.api.app import create_app

__all__ = ["create_app"]
