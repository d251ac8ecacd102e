"""/static/ as Daphne serves it (cs_site/static_files.py) from a real `collectstatic`: hashed
names cached for good and sent compressed, embed.js under its stable URL with a short cache
that revalidates, and the pages and the widget config linking the hashed names."""

import gzip
import re

import httpx
import pytest
from django.core.asgi import get_asgi_application
from django.templatetags.static import static

from chat.models import Site
from cs_site.static_files import StaticFiles
from tests.e2e.conftest import collected_static

HASHED = re.compile(r"^/static/(.+)\.[0-9a-f]{12}(\.\w+)$")
FOR_GOOD = "max-age=315360000, public, immutable"


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """STATIC_ROOT as a release leaves it: `manage.py collectstatic` with the settings' storage
    (the one the end-to-end stacks serve)."""
    return collected_static(tmp_path_factory)


@pytest.fixture
def released(settings, collected):
    """This process as in production: the settings' own storage (tests/conftest.py swaps in
    plain names) and the collected STATIC_ROOT."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    settings.STATIC_ROOT = collected
    return collected


@pytest.fixture
def http(released):
    """An HTTP client of the ASGI app asgi.py serves with SERVE_STATIC (DEBUG off)."""
    app = StaticFiles(get_asgi_application())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def test_only_the_built_browser_code_is_published(collected):
    assert (collected / "widget" / "widget.js").is_file()
    assert (collected / "agents" / "console.js").is_file()
    sources = [path for path in collected.rglob("*") if "src" in path.relative_to(collected).parts]
    assert sources == []  # static/*/src/ are bundled into the files above, not served


async def test_hashed_files_are_cached_for_good_and_sent_compressed(http, released):
    url = static("agents/console.js")
    assert HASHED.match(url), url  # what the console's pages link
    plain = (released / "agents" / "console.js").read_bytes()
    async with http:
        packed = await http.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})
        assert packed.status_code == 200
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.headers["cache-control"] == FOR_GOOD
        assert packed.headers["vary"] == "Accept-Encoding"
        assert int(packed.headers["content-length"]) < len(plain)
        assert packed.content == plain  # httpx undid the gzip
        whole = await http.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in whole.headers
        assert whole.headers["cache-control"] == FOR_GOOD and whole.content == plain
        admin_css = await http.get(static("admin/css/base.css"))
        assert admin_css.status_code == 200 and admin_css.headers["cache-control"] == FOR_GOOD


async def test_embed_js_keeps_its_url_with_a_short_cache_that_revalidates(http, released):
    async with http:
        embed = await http.get("/static/widget/embed.js", headers={"Origin": "https://shop.test"})
        assert embed.status_code == 200
        assert embed.content == (released / "widget" / "embed.js").read_bytes()
        assert embed.headers["cache-control"] == "max-age=300, public"
        assert embed.headers["access-control-allow-origin"] == "*"  # company pages load it
        assert embed.headers["last-modified"]
        again = await http.get(
            "/static/widget/embed.js", headers={"If-None-Match": embed.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        assert again.headers["cache-control"] == "max-age=300, public"
        head = await http.head("/static/widget/embed.js")
        assert head.status_code == 200 and head.content == b""
        assert (await http.post("/static/widget/embed.js")).status_code == 405
        # What is not a collected file is Django's: a missing file, a page.
        missing = await http.get("/static/widget/missing.js")
        assert missing.status_code == 404 and "cache-control" not in missing.headers
        assert (await http.get("/metrics")).status_code == 200  # loopback may read it


async def test_big_files_are_sent_whole_in_blocks(http, released):
    big = max(
        (path for path in released.rglob("*.js") if not HASHED.match(f"/static/{path}")),
        key=lambda path: path.stat().st_size,
    )
    assert big.stat().st_size > 256 * 1024  # more than one read (the API docs' bundle)
    url = "/static/" + big.relative_to(released).as_posix()
    async with http:
        response = await http.get(url, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200 and response.content == big.read_bytes()


@pytest.mark.django_db
def test_widget_config_names_the_hashed_widget_js(client, released):
    site = Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")
    config = client.get(
        f"/widget/config/{site.key}", headers={"Origin": "https://shop.example.com"}
    ).json()
    match = HASHED.match(config["widget_js"])
    assert match and match.groups() == ("widget/widget", ".js"), config["widget_js"]
    served = released / config["widget_js"].removeprefix("/static/")
    assert served.read_bytes() == (released / "widget" / "widget.js").read_bytes()
    assert (
        gzip.decompress(served.with_name(served.name + ".gz").read_bytes()) == served.read_bytes()
    )


@pytest.mark.django_db
def test_widget_config_without_a_collected_widget_js_leaves_the_loader_its_plain_url(
    client, settings, tmp_path, caplog
):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    settings.STATIC_ROOT = tmp_path  # never collected
    site = Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")
    response = client.get(f"/widget/config/{site.key}")
    assert response.status_code == 200 and response.json()["widget_js"] is None
    assert "widget/widget.js" in caplog.text
