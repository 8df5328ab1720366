"""gunicorn settings for otp-service.

`otp-service serve` reads this file (or the one OTP_GUNICORN_CONFIG names); `gunicorn -c gunicorn.conf.py` runs the
service with it directly. Each value has an environment variable, so a container needs no edited copy. A bad value
stops start-up with a message naming its variable.
"""
from otp_service.config import EnvReader
from otp_service.entrypoints import server
from otp_service.entrypoints import workers as workers_module

env = EnvReader()

# The app: a factory, called in each worker after the fork, so every worker opens its own store session.
wsgi_app = "otp_service.entrypoints.app:create_app()"
preload_app = False

bind = [env.str("OTP_BIND", "127.0.0.1:8080")]

# Workers from the CPU count (2 x CPUs + 1, at most 8). Each is gunicorn's gevent worker (workers.GeventWorker):
# one process serves up to `worker_connections` connections, every request in a greenlet that yields while it
# waits on the store, the user directory or a provider, so a 300 ms provider costs no thread and no CPU. At most
# OTP_MAX_IN_FLIGHT requests run in a worker at once; one more is answered 503 with Retry-After at once. gthread
# (OTP_WORKER_CLASS=gthread, OTP_THREADS threads each) remains for comparison; it keeps `threads` requests in
# flight per worker.
workers = env.int("OTP_WORKERS", server.default_workers(), 1, 256)
worker_class = server.WORKER_CLASSES[env.choice("OTP_WORKER_CLASS", "gevent", tuple(server.WORKER_CLASSES))]
worker_connections = env.int("OTP_WORKER_CONNECTIONS", 1000, 1, 100_000)
threads = env.int("OTP_THREADS", 4, 1, 256)
workers_module.limits_from_env(env)  # OTP_MAX_IN_FLIGHT, OTP_BODY_READ_TIMEOUT_SECONDS: read by each worker

# A worker silent for `timeout` seconds is killed and replaced. It must exceed the slowest request: user directory
# + store + delivery (OTP_DELIVERY_TIMEOUT_SECONDS, 10 s by default).
timeout = env.int("OTP_WORKER_TIMEOUT_SECONDS", 30, 1, 3600)
# On SIGTERM, workers stop accepting and get this long to finish the requests they hold.
graceful_timeout = env.int("OTP_GRACEFUL_TIMEOUT_SECONDS", 20, 1, 3600)
# Idle keep-alive connections are closed after `keepalive` seconds, and a request line and headers must arrive
# within it (the gevent worker's read timeout for them; the body has OTP_BODY_READ_TIMEOUT_SECONDS). Hence at least 1.
keepalive = env.int("OTP_KEEPALIVE_SECONDS", 5, 1, 3600)

# gunicorn >= 25.1 opens a control socket at one path per user, which a second server on the host would take over;
# the service does not need one (scale with OTP_WORKERS and restarts).
control_socket_disable = True

# Logs: JSON lines on standard error, like the app's; the access log (off by default: the app already writes one
# line per request, with its msgid, route, err and masked key) goes to standard output when OTP_ACCESS_LOG=true.
logger_class = "otp_service.entrypoints.server.JsonLogger"
loglevel = env.choice("OTP_LOG_LEVEL", "info", ("debug", "info", "warning", "error"))
errorlog = "-"
accesslog = "-" if env.bool("OTP_ACCESS_LOG", False) else None

# Metrics under several workers: one PROMETHEUS_MULTIPROC_DIR (a fresh temporary folder unless set), emptied at
# start, dead workers marked. The store is opened in each worker once it has booted.
on_starting = server.on_starting
post_worker_init = server.post_worker_init
child_exit = server.child_exit
on_exit = server.on_exit
