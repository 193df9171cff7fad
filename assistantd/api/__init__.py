"""The HTTP edge: parse, call one service method, serialize. Errors become envelopes in errors.py."""
