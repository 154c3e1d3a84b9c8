"""Unit tests of the deployment files (infra/bicep, k8s, Dockerfiles)."""
