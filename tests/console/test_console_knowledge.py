"""The console's knowledge pages, /console/knowledge/: staff only, edits only with admin's
chat.change_article, and every write going through chat.knowledge.services (passages split
again, the new text searchable)."""

import pytest
from django.contrib.auth.models import Permission

from chat.knowledge import retrieval, services
from chat.knowledge.models import Article, Passage
from tests.console.helpers import client_for, make_user

# on_commit (the knowledge version bump) needs real commits.
pytestmark = pytest.mark.django_db(transaction=True)

LIST, NEW = "/console/knowledge/", "/console/knowledge/new/"


def edit_url(article: Article) -> str:
    return f"/console/knowledge/{article.pk}/"


def editor(
    django_user_model, username="eve", codenames=("add_article", "change_article", "delete_article")
):
    user = make_user(django_user_model, username)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="chat", codename__in=codenames)
    )
    return user


def test_changing_alone_does_not_add_or_delete(django_user_model):
    article = services.article_create(title="Keep me", body="# Keep me\n\nText.")
    client = client_for(editor(django_user_model, "carl", codenames=("change_article",)))
    assert client.get(NEW).status_code == 403
    deleting = client.post(edit_url(article), {"delete": "1", "confirm": "1"})
    assert deleting.status_code == 403 and Article.objects.filter(pk=article.pk).exists()


def form(**changes) -> dict:
    data = {
        "title": "Zorblax wrench care",
        "body": "## Cleaning\n\nWipe the zorblax wrench dry.",
        "language": "en",
        "site": "",
        "tags": "tools, care",
        "source_url": "",
        "published": "on",
        "save": "1",
    }
    return {**data, **changes}


def search(question: str):
    return retrieval.search_sync(question=question, site_id=None, language="en")


def test_anonymous_is_sent_to_login(client):
    a = services.article_create(title="Kept", body="Text.")
    for url in (LIST, NEW, edit_url(a)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    response = client.post(edit_url(a), {"delete": "1", "confirm": "1"})
    assert response.status_code == 302 and Article.objects.filter(pk=a.pk).exists()


def test_non_staff_is_refused(django_user_model):
    client = client_for(make_user(django_user_model, "carl", staff=False))
    assert client.get(LIST).status_code == 302
    assert client.post(NEW, form()).status_code == 302
    assert not Article.objects.exists()


def test_staff_without_permission_lists_read_only_and_cannot_write(django_user_model):
    a = services.article_create(title="Returns <b>policy</b>", body="## Window\n\nThirty days.")
    client = client_for(make_user(django_user_model, "ann"))
    page = client.get(LIST)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Returns &lt;b&gt;policy&lt;/b&gt;" in html and "<b>policy</b>" not in html
    assert NEW not in html
    assert "Read-only" in html
    view = client.get(edit_url(a))
    assert view.status_code == 200 and 'name="save"' not in view.content.decode()
    assert client.get(NEW).status_code == 403
    assert client.post(NEW, form()).status_code == 403
    assert client.post(edit_url(a), form(title="Changed")).status_code == 403
    assert client.post(edit_url(a), {"delete": "1", "confirm": "1"}).status_code == 403
    a.refresh_from_db()
    assert a.title == "Returns <b>policy</b>" and Article.objects.count() == 1


def test_list_searches_by_title(django_user_model):
    services.article_create(title="Shipping times", body="Two days.")
    services.article_create(title="Refund rules", body="Thirty days.")
    client = client_for(make_user(django_user_model, "ann"))
    html = client.get(LIST, {"q": "shipp"}).content.decode()
    assert "Shipping times" in html and "Refund rules" not in html


def test_editor_creates_edits_and_deletes_through_the_services(django_user_model):
    client = client_for(editor(django_user_model))
    assert NEW in client.get(LIST).content.decode()

    response = client.post(
        NEW,
        form(
            body="## Cleaning\n\nWipe the zorblax wrench dry.\n\n"
            "## Storage\n\nKeep it in the quuxbox."
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    a = Article.objects.get()
    assert response["Location"] == edit_url(a)
    assert (a.title, a.tags, a.published, a.site_id) == (
        "Zorblax wrench care",
        ["tools", "care"],
        True,
        None,
    )
    assert list(Passage.objects.filter(article=a).values_list("heading", flat=True)) == [
        "Cleaning",
        "Storage",
    ]
    assert [h.article_id for h in search("quuxbox")] == [a.pk]
    assert "<td>2</td>" in client.get(LIST).content.decode()  # passages count

    response = client.post(
        edit_url(a),
        form(
            body="## Oiling\n\nOil the frobnitz hinge weekly.",
            source_url="https://help.example/zorblax",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    a.refresh_from_db()
    assert a.source_url == "https://help.example/zorblax"
    assert list(Passage.objects.filter(article=a).values_list("heading", flat=True)) == ["Oiling"]
    [hit] = search("frobnitz hinge")
    assert (hit.article_id, hit.heading) == (a.pk, "Oiling")
    assert search("quuxbox") == []

    # Delete asks first: nothing goes without `confirm`.
    response = client.post(edit_url(a), {"delete": "1"})
    assert response.status_code == 200 and "Yes, delete" in response.content.decode()
    assert Article.objects.filter(pk=a.pk).exists()
    response = client.post(edit_url(a), {"delete": "1", "confirm": "1"})
    assert response.status_code == 302 and response["Location"] == LIST
    assert not Article.objects.exists() and not Passage.objects.exists()
    assert search("frobnitz hinge") == []
    assert client.get(edit_url(a)).status_code == 404


def test_invalid_input_is_refused_with_the_field_error(django_user_model):
    client = client_for(editor(django_user_model))
    for url in ("javascript:alert(1)", "ftp://files.example/a", "not a url"):
        response = client.post(NEW, form(source_url=url))
        assert response.status_code == 400
        errors = response.context["form"].errors
        assert "source_url" in errors, (url, errors)
    response = client.post(NEW, form(title="  "))
    assert response.status_code == 400 and "title" in response.context["form"].errors
    assert not Article.objects.exists()
