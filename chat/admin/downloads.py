"""Exports as file downloads, streamed: a download of any size holds one batch in memory."""

from collections.abc import AsyncIterator, Generator

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header

# Characters (or bytes) of an export pulled per trip to the ORM's thread: the memory a
# download holds at once, whatever its size, and few enough trips that they cost nothing beside
# the queries.
EXPORT_BATCH_CHARS = 64 * 1024


def download(
    parts: Generator[str, None, None] | Generator[bytes, None, None],
    name: str,
    extension: str,
    content_type: str,
) -> StreamingHttpResponse:
    """A file download streamed from `parts` (a generator of text or of bytes that may run
    queries)."""
    filename = f"{name}-{timezone.localtime():%Y%m%d-%H%M%S}.{extension}"
    response = StreamingHttpResponse(_streamed(parts), content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


async def _streamed(
    parts: Generator[str, None, None] | Generator[bytes, None, None],
) -> AsyncIterator[bytes]:
    """Batches of `parts`, each pulled in the ORM's thread: Daphne serves an async iterator as
    it comes, where it would read a sync one to the end into memory first."""

    def next_batch() -> bytes:
        batch, size = [], 0
        for part in parts:
            batch.append(part if isinstance(part, bytes) else part.encode())
            size += len(part)
            if size >= EXPORT_BATCH_CHARS:
                break
        return b"".join(batch)

    try:
        while batch := await sync_to_async(next_batch)():
            yield batch
    finally:
        # Also when the download is cut short: the queries' cursor is closed by the thread
        # that opened it (SQLite refuses any other). Not `runtime.aio.db`, whose pool may run
        # each batch on another thread (and connection) than the cursor's.
        await sync_to_async(parts.close)()
