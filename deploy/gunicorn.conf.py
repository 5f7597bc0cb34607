"""gunicorn settings for authz: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`
(or `authz serve --server gunicorn`; docs/operating.md, "Serving")."""

import multiprocessing

bind = "127.0.0.1:8080"
# Decisions are CPU-bound and short: one sync worker per core, plus one.
workers = multiprocessing.cpu_count() + 1
worker_class = "sync"
# Load the app (policy, store check) once in the master: a broken policy stops the
# start with one clear message instead of one per worker.
preload_app = True
timeout = 10
graceful_timeout = 10
keepalive = 2
# Proxies send credentials in headers; gunicorn's own limits bound them. They sit above
# what the shipped doors forward (nginx: 4 x 8k header buffers, a line at most 8k;
# Caddy: max_header_size 8KB plus Go's 4 KiB slack, i.e. at most ~2,400 tiny headers),
# so an oversized request is refused by the door, never turned by gunicorn into a
# 400/431 that nginx reports as a 500 or Caddy shows the client; authz bounds each
# value itself (403).
limit_request_line = 8190
limit_request_fields = 4000
limit_request_field_size = 12288
accesslog = "-"
# The path only (%(U)s): a query string may carry an api_key; no header is logged.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(M)sms'
