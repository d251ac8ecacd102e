"""/static/ served by Daphne itself (SERVE_STATIC, no proxy in front): WhiteNoise's file index
and headers, served from the event loop.

`collectstatic` (every release; `make run` runs it) writes each file under a name with its
content's hash (console.3f2a1b9c8d7e.js) plus gzip copies (and brotli ones with the Brotli
package). The templates link the hashed names, which never change meaning, so WhiteNoise lets
browsers keep them for ten years (`immutable`). A name without a hash keeps its URL across
releases, above all the widget's embed.js that company pages embed: browsers keep it
WHITENOISE_MAX_AGE seconds, then revalidate with ETag / Last-Modified (a 304, no body).

Why not WhiteNoise's own Django middleware: it is synchronous, so under ASGI Django would run
every HTTP request (not only static ones) through a thread and back, holding a thread of the
small default pool for as long as an async view runs. Here a static request is a dict lookup on
the event loop, the file is read in a thread block by block, and everything else goes to Django
untouched. With DEBUG, Django's own handler serves the source folders instead, so an edited
file shows without collecting.
"""

import asyncio
import logging
import warnings
from http import HTTPStatus

from whitenoise.middleware import WhiteNoiseMiddleware

logger = logging.getLogger(__name__)

BLOCK_BYTES = 256 * 1024  # per read in a thread: most files are sent after one


class StaticFiles:
    """ASGI app: a GET or HEAD of a collected file is answered here, anything else by `app`."""

    def __init__(self, app) -> None:
        self.app = app
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Reads the WHITENOISE_* settings and indexes STATIC_ROOT once, as a release
            # leaves it: files collected later are seen after a restart.
            self.whitenoise = WhiteNoiseMiddleware(get_response=None)
        for warning in caught:  # "No directory at: ..." before the first collectstatic
            logger.warning(
                "static files: %s (run `python manage.py collectstatic`)", warning.message
            )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            root_path = scope.get("root_path", "")
            if root_path and path.startswith(root_path):
                path = path[len(root_path) :]  # as Django's path_info
            static_file = self.whitenoise.files.get(path)
            if static_file is not None:
                await self.serve(static_file, scope, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def serve(static_file, scope, send) -> None:
        # WhiteNoise reads request headers in the WSGI environ's spelling.
        environ = {
            "HTTP_" + name.decode("latin-1").upper().replace("-", "_"): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        # Opening the file is disk I/O too: in a thread, like the reads.
        response = await asyncio.to_thread(static_file.get_response, scope["method"], environ)
        file = response.file
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": int(response.status),
                    "headers": [
                        (name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in response.headers
                    ],
                }
            )
            if file is None or response.status == HTTPStatus.NOT_MODIFIED:
                await send({"type": "http.response.body", "body": b""})
                return
            while True:
                block = await asyncio.to_thread(file.read, BLOCK_BYTES)
                last = len(block) < BLOCK_BYTES
                await send({"type": "http.response.body", "body": block, "more_body": not last})
                if last:
                    return
        finally:
            if file is not None:
                file.close()
