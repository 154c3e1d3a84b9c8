"""Azure Functions entry point: the HTTP API as one ASGI function, plus the Service Bus and timer
triggers."""

import azure.functions as func

from functions.api import create_app
from functions.azure_ai import bp as azure_ai_blueprint
from functions.deadletters import bp as deadletters_blueprint
from functions.retention import bp as retention_blueprint
from functions.router import bp as router_blueprint
from functions.webhooks import bp as webhooks_blueprint

app = func.AsgiFunctionApp(app=create_app(), http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(router_blueprint)
app.register_functions(azure_ai_blueprint)
app.register_functions(webhooks_blueprint)
app.register_functions(deadletters_blueprint)
app.register_functions(retention_blueprint)
