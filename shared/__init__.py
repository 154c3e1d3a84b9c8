"""The library both the Functions app and the long-lived workers import."""
