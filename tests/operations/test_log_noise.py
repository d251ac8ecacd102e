"""A refused request is one log line; a server error keeps its traceback."""

import io
import logging

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import include, path

from cs_site.logfilters import ExpectedRefusals


def _forbidden(request):
    raise PermissionDenied("not for you")


def _broken(request):
    raise RuntimeError("a bug")


# This module doubles as the URLconf of the tests marked urls(__name__) below.
urlpatterns = [
    path("forbidden/", _forbidden),
    path("broken/", _broken),
    path("", include("cs_site.urls")),
]


@pytest.fixture
def console_log():
    """What the settings' console handler writes, as text."""
    handler = next(
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, ExpectedRefusals) for f in h.filters)
    )
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def request_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("django.request", "django.security"))]


@pytest.mark.django_db
def test_admin_403_is_one_line_without_traceback(client, django_user_model, caplog, console_log):
    # Staff without the permission to view conversations: the admin refuses with
    # PermissionDenied, which Django logs with the exception attached.
    user = django_user_model.objects.create_user("agent", password="x", is_staff=True)
    client.force_login(user)
    with caplog.at_level(logging.WARNING):
        response = client.get("/admin/chat/conversation/")
    assert response.status_code == 403
    [record] = request_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "Forbidden (Permission denied): /admin/chat/conversation/"
    assert record.exc_info is None
    lines = console_log.getvalue().splitlines()
    assert len(lines) == 1 and "Forbidden (Permission denied)" in lines[0]
    assert "Traceback" not in console_log.getvalue()


@pytest.mark.django_db
def test_anonymous_admin_is_redirected_without_logging(client, caplog, console_log):
    with caplog.at_level(logging.WARNING):
        response = client.get("/admin/chat/conversation/")
    assert response.status_code == 302
    assert request_records(caplog) == []
    assert console_log.getvalue() == ""


@pytest.mark.django_db
def test_404_is_one_line(client, caplog, console_log):
    with caplog.at_level(logging.WARNING):
        assert client.get("/no/such/page/").status_code == 404
        assert client.get("/admin/chat/conversation/does-not-exist/").status_code == 302
    [record] = request_records(caplog)
    assert record.getMessage() == "Not Found: /no/such/page/" and record.exc_info is None
    assert console_log.getvalue().count("\n") == 1
    assert "Traceback" not in console_log.getvalue()


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_permission_denied_in_any_view_and_bad_host_are_one_line(client, caplog, console_log):
    with caplog.at_level(logging.WARNING):
        assert client.get("/forbidden/").status_code == 403
        # django.security.DisallowedHost: a 400 logged at ERROR with the exception attached.
        assert client.get("/forbidden/", HTTP_HOST="evil.example").status_code == 400
    output = console_log.getvalue()
    assert "Traceback" not in output and "not for you" not in output
    lines = output.splitlines()
    assert len(lines) == 2
    assert "WARNING django.request: Forbidden (Permission denied): /forbidden/" in lines[0]
    assert "ERROR django.security.DisallowedHost: Invalid HTTP_HOST header" in lines[1]


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_a_server_error_keeps_its_traceback(client, caplog, console_log):
    client.raise_request_exception = False
    with caplog.at_level(logging.WARNING):
        assert client.get("/broken/").status_code == 500
    [record] = request_records(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is not None
    output = console_log.getvalue()
    assert "Traceback" in output and "RuntimeError: a bug" in output
