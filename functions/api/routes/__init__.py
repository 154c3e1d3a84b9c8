"""The API's routes, one module per resource: jobs (create, start, read, list, cancel), their results,
usage, and health. Each is an APIRouter over the dependencies of functions/api/deps.py; create_app
(functions/api/app.py) includes them in this order."""
