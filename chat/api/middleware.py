"""Oversized API requests are refused with 413 before anything reads them whole."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse

from chat.api import errors
from chat.api.errors import ApiError

# The APIs' URL prefixes, and the shape each renders its errors in.
_PREFIXES = (("/api/", errors.desk_body), ("/v1/", errors.openai_body))


class BodyLimitMiddleware:
    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        refusal = self._refusal(request)
        if iscoroutinefunction(self.get_response):
            return self._async(request, refusal)
        return refusal or self.get_response(request)

    async def _async(self, request, refusal):
        return refusal or await self.get_response(request)

    def _refusal(self, request) -> JsonResponse | None:
        render = next((r for prefix, r in _PREFIXES if request.path.startswith(prefix)), None)
        if render is None:
            return None
        limit = settings.API["MAX_BODY_BYTES"]
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= limit and (length or request.method in ("GET", "HEAD", "OPTIONS")):
            return None
        if not length:
            # No Content-Length (a chunked body): Daphne has it in a spooled file already.
            # Tell Django's own upload limit apart from ours.
            try:
                length = len(request.body)
            except RequestDataTooBig:  # over DATA_UPLOAD_MAX_MEMORY_SIZE
                length = limit + 1
            if length <= limit:
                return None
        error = ApiError(413, errors.TOO_LARGE, f"The request body is larger than {limit} bytes.")
        return JsonResponse(render(error), status=413)
