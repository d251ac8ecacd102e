"""ActionCall.proposed_by (a trigger, or the model), and Action.confirm_text and result as JSON:
one template as text, or a mapping of language to template (chat/actions/localized.py).

The templates move through text: each stored template is written as JSON text first (a plain
string becomes a JSON string), so the column's change to JSON keeps every value, on SQLite
(whose JSON column checks JSON_VALID) and on PostgreSQL (`USING result::jsonb`) alike."""

import json

from django.db import migrations, models

TEMPLATES = ("confirm_text", "result")


def templates_to_json_text(apps, schema_editor):
    Action = apps.get_model("chat", "Action")
    for action in Action.objects.all().only("pk", *TEMPLATES):
        values = {
            name: json.dumps(getattr(action, name) or "", ensure_ascii=False) for name in TEMPLATES
        }
        Action.objects.filter(pk=action.pk).update(**values)


def templates_from_json_text(apps, schema_editor):
    """Back to one template each: English, else the first language given."""
    Action = apps.get_model("chat", "Action")
    for action in Action.objects.all().only("pk", *TEMPLATES):
        values = {}
        for name in TEMPLATES:
            try:
                value = json.loads(getattr(action, name) or '""')
            except ValueError:
                value = getattr(action, name)
            if isinstance(value, dict):
                value = value.get("en") or next(iter(value.values()), "")
            values[name] = value if isinstance(value, str) else ""
        Action.objects.filter(pk=action.pk).update(**values)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0012_actions"),
    ]

    operations = [
        migrations.AddField(
            model_name="actioncall",
            name="proposed_by",
            field=models.CharField(
                choices=[
                    ("trigger", "A trigger matched the customer's words"),
                    ("model", "The model proposed it (a tool call)"),
                ],
                default="trigger",
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="action", name="confirm_text", field=models.TextField(blank=True)
        ),
        migrations.AlterField(
            model_name="action", name="result", field=models.TextField(blank=True)
        ),
        migrations.RunPython(templates_to_json_text, templates_from_json_text),
        migrations.AlterField(
            model_name="action",
            name="confirm_text",
            field=models.JSONField(
                blank=True,
                default=str,
                help_text="What will be done, in plain words, e.g. Cancel order {order_id}? Or one "
                'per language: {"en": "Cancel order {order_id}?", "zh": "取消订单 {order_id}？"}.',
            ),
        ),
        migrations.AlterField(
            model_name="action",
            name="result",
            field=models.JSONField(
                blank=True,
                default=str,
                help_text="The fields shown, from the JSON answer, e.g. Order {order_id}: "
                "{status}, due {eta}. A missing field makes the answer a bad response. "
                "Or one per language: "
                '{"en": "Order {order_id}: {status}", "zh": "订单 {order_id}：{status}"}.',
            ),
        ),
    ]
