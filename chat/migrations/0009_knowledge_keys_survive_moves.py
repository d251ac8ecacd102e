"""Imported articles keyed by a file's absolute path ("file:/home/…/shipping.md", and
"file:…#digest" for a CSV row) get the key an import now gives them: their title and language
(chat/knowledge/importing.py), so importing the same pages again, from anywhere, updates them
instead of adding each one a second time.

Written out here rather than imported from importing.py: a migration must do tomorrow what it
does today. Of several old rows that now share a key (the same page imported from two folders)
only the oldest takes it; the others keep their path key and stay as they are, for staff to
delete: a migration does not guess which copy someone has edited since.
"""

import hashlib

from django.db import migrations

OLD_PREFIX = "file:"
MAX_KEY_CHARS = 500


def title_key(title: str, language: str) -> str:
    primary = language.strip().replace("_", "-").split("-")[0].lower() or "en"
    return f"title:{primary}:{' '.join(title.strip()[:300].split()).casefold()}"


def fit(key: str) -> str:
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def rekey(apps, schema_editor):
    Article = apps.get_model("chat", "Article")
    taken = set(Article.objects.exclude(source_key__startswith=OLD_PREFIX)
                .exclude(source_key="").values_list("site_id", "source_key"))
    for article in (Article.objects.filter(source_key__startswith=OLD_PREFIX)
                    .order_by("id").only("id", "site_id", "title", "language", "source_key")):
        key = fit(title_key(article.title, article.language))
        if (article.site_id, key) in taken:
            continue
        taken.add((article.site_id, key))
        Article.objects.filter(pk=article.pk).update(source_key=key)


class Migration(migrations.Migration):

    dependencies = [
        ("chat", "0008_site_protects_transcripts"),
    ]

    # Backwards leaves the keys as they are: the code before this migration looks articles up
    # by path, so it would import these pages once more as new ones; nothing is lost.
    operations = [migrations.RunPython(rekey, migrations.RunPython.noop)]
