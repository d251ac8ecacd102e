"""The knowledge base in the console, /console/knowledge/: the help-centre articles the bot
answers from, listed for every staff member and edited by those admin lets edit them.

Reads go through `chat.knowledge.selectors`; every write through `chat.knowledge.services`, so
an article's passages are split again and every process searches the new text from its next
question on (as when admin saves it). Saving and deleting ask for admin's own permission,
`chat.change_article`: a staff member who may not edit articles there may not edit them here.
"""

from django import forms
from django.core.exceptions import PermissionDenied
from django.core.validators import RegexValidator, URLValidator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from agents.forms import AgentTextField
from agents.views import staff_required
from chat.knowledge import selectors, services
from chat.knowledge.models import Article

PERMISSION = "chat.change_article"
BODY_MAX_CHARS = 200_000
TAGS_MAX = 50


class ArticleForm(forms.Form):
    title = AgentTextField(max_length=300, single_line=True)
    body = AgentTextField(
        max_length=BODY_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 18}),
        help_text="Markdown. ## headings split it into passages.",
    )
    language = forms.CharField(
        max_length=35,
        initial="en",
        validators=[
            RegexValidator(
                r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", "A language tag such as en or zh-CN."
            )
        ],
        help_text="Questions in this language search this article first.",
    )
    site = forms.ModelChoiceField(
        queryset=selectors.sites(), required=False, empty_label="All sites"
    )
    tags = AgentTextField(
        max_length=2000,
        required=False,
        single_line=True,
        help_text="Comma-separated, e.g. shipping, returns",
    )
    source_url = forms.URLField(
        label="Source URL",
        max_length=2000,
        required=False,
        assume_scheme="https",
        validators=[
            URLValidator(schemes=["http", "https"], message="An http:// or https:// address.")
        ],
        help_text="Where customers can read the page; cited as source.",
    )
    published = forms.BooleanField(
        required=False, initial=True, help_text="Only published articles answer."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["site"].queryset = selectors.sites()  # fresh per form, not per import

    def clean_tags(self) -> list[str]:
        tags = list(
            dict.fromkeys(t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip())
        )
        if len(tags) > TAGS_MAX:
            raise forms.ValidationError(f"At most {TAGS_MAX} tags.")
        return tags

    def article_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "title": data["title"],
            "body": data["body"],
            "language": data["language"],
            "site_id": data["site"].pk if data["site"] else None,
            "tags": data["tags"],
            "source_url": data["source_url"],
            "published": data["published"],
        }


def _initial(article: Article) -> dict:
    return {
        "title": article.title,
        "body": article.body,
        "language": article.language,
        "site": article.site_id,
        "tags": ", ".join(article.tags or []),
        "source_url": article.source_url,
        "published": article.published,
    }


@staff_required
@require_GET
def knowledge(request):
    query = request.GET.get("q", "")[:200]
    return render(
        request,
        "agents/knowledge.html",
        {
            "articles": selectors.articles_for_console(query=query),
            "query": query,
            "can_edit": request.user.has_perm(PERMISSION),
            "section": "knowledge",
        },
    )


@staff_required
@require_http_methods(["GET", "POST"])
def knowledge_edit(request, article_id: int | None = None):
    """An article's form (a new one without `article_id`). POST `save` stores it; POST
    `delete` asks to confirm, and with `confirm` deletes it."""
    article = None
    if article_id is not None:
        article = selectors.article(article_id=article_id)
        if article is None:
            raise Http404("No such article.")
    can_edit = request.user.has_perm(PERMISSION)
    if request.method == "POST" and not can_edit:
        raise PermissionDenied("You do not have permission to change articles.")
    # As in admin: adding and deleting need their own permissions besides changing.
    if article is None and not (can_edit and request.user.has_perm("chat.add_article")):
        raise PermissionDenied("You do not have permission to add articles.")
    context = {"article": article, "can_edit": can_edit, "section": "knowledge"}

    if request.method == "POST" and "delete" in request.POST and article is not None:
        if not request.user.has_perm("chat.delete_article"):
            raise PermissionDenied("You do not have permission to delete articles.")
        if request.POST.get("confirm"):
            services.article_delete(article=article)
            return redirect("agents:knowledge")
        return render(request, "agents/knowledge_edit.html", {**context, "confirming_delete": True})

    form = ArticleForm(initial=_initial(article) if article else None)
    status = 200
    if request.method == "POST":
        form = ArticleForm(request.POST)
        if form.is_valid():
            if article is None:
                article = services.article_create(**form.article_fields())
            else:
                services.article_update(article=article, **form.article_fields())
            return redirect("agents:knowledge-edit", article_id=article.pk)
        status = 400
    if not can_edit:
        for field in form.fields.values():
            field.disabled = True
    passages = selectors.article_passages(article_id=article.pk) if article else []
    return render(
        request,
        "agents/knowledge_edit.html",
        {**context, "form": form, "passages": passages},
        status=status,
    )
