"""moto's S3 server for Ward's tests, one request at a time.

moto checks If-None-Match and then stores the object in two steps; its default threaded
server could let two racing create-only writes both pass the check. Serving requests one at
a time makes the conditional create atomic, as it is on S3 (connections are HTTP/1.0, so a
client keeping one open does not block the others).
"""

import sys

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
