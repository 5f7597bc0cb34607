"""gunicorn settings for authz: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`."""

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
# Proxies send credentials in headers; gunicorn's own limits bound them.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 16384
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(M)sms'
