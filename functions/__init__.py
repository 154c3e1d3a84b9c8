"""Azure Functions handlers: thin — parse the trigger input, call shared, settle."""
