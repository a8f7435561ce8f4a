#!/bin/sh
# Container entry point.
#   serve (the default): check the clinical content, then exec gunicorn -- exec, so gunicorn is PID 1 and gets
#                        SIGTERM directly for a graceful shutdown.
#   anything else:       run as given, e.g. `calcinosis-cds db upgrade` in the migration Job.
set -eu
if [ "$#" -eq 0 ] || [ "$1" = "serve" ]; then
    # Quiet when the content is fine, so every line the container writes is a JSON log record; a problem is
    # listed on stderr and stops the container (set -e).
    calcinosis-cds check-content >/dev/null
    exec gunicorn --config python:cds_service.gunicorn_conf 'cds_service:create_app()'
fi
exec "$@"
