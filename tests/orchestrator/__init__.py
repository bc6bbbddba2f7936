"""Orchestrator flows run by the test suite in an environment of their own (.venv-orchestrator)."""
