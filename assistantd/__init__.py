"""assistantd: a self-hosted server that speaks the OpenAI Assistants API v2."""

__version__ = "0.1.0"
