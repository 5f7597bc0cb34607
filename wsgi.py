"""``gunicorn wsgi:app`` from a source checkout: the application is ``authz.wsgi:app``."""

from authz.wsgi import app

__all__ = ["app"]
