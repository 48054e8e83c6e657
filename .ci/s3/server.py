"""moto's S3 server for Ward's tests: connections served concurrently, requests one at a time.

moto checks If-None-Match and then stores the object in two steps, so two racing
create-only writes could both pass the check if requests ran at once. Each request is
therefore handled under one lock (its response built whole inside it), which makes the
conditional create atomic, as it is on S3. Connections are still accepted and read on their
own threads: a connection that a client opened but has not written to yet (its task not yet
polled) must not stop the server, which a single-threaded server would do until the
client's timeout.
"""

import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


class OneAtATime:
    """A WSGI app that runs `app` for one request at a time."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return [body]


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = OneAtATime(DomainDispatcherApplication(create_backend_app))
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
