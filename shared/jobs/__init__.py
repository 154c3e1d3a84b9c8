"""Jobs: creating and reading job records, applying the workflow's decisions (lifecycle), webhooks,
API keys, retention and purge, and the read side the dashboard and the API share (ops). Above the
runtime (connections, the consume loop), below the step runtime."""
