"""Logging filters named in settings.LOGGING."""

import logging


class ExpectedRefusals(logging.Filter):
    """A refused request (4xx) is logged by Django with the exception that refused it
    (PermissionDenied, SuspiciousOperation, …): a full traceback for something that is
    working as intended, one per forbidden admin page or bad Host header, which floods the
    log. Keep the one line (status, path) and drop the traceback; 5xx keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        refusal_logger = record.name in (
            "django.request",
            "django.security",
        ) or record.name.startswith("django.security.")
        if refusal_logger and 400 <= getattr(record, "status_code", 0) < 500:
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
        return True
