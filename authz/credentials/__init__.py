"""Credential formats and their cryptography: no I/O, no store, no request."""
