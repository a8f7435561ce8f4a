#!/bin/sh
# Container entry point.
#   serve (the default): check the clinical content, then exec `calcinosis-cds serve` -- exec, so its master
#                        process is PID 1 and gets SIGTERM directly for a graceful shutdown. The same command
#                        serves outside the container: granian workers behind cds_service.buffered_wsgi
#                        (settings: cds_service/serving.py and the README "Serving model").
#   anything else:       run as given, e.g. `calcinosis-cds db upgrade` in the migration Job.
set -eu
if [ "$#" -eq 0 ] || [ "$1" = "serve" ]; then
    # Quiet when the content is fine, so every line the container writes is a JSON log record; a problem is
    # listed on stderr and stops the container (set -e).
    calcinosis-cds check-content >/dev/null
    exec calcinosis-cds serve
fi
exec "$@"
