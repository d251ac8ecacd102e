from django.db import migrations

from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT


def create_default_profile(apps, schema_editor):
    BotProfile = apps.get_model("chat", "BotProfile")
    if BotProfile.objects.filter(is_default=True).exists():
        return
    # Sampling fields take the model's defaults.
    BotProfile.objects.create(
        name=DEFAULT_PROFILE_NAME, is_default=True, system_prompt=DEFAULT_SYSTEM_PROMPT
    )


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]

    operations = [migrations.RunPython(create_default_profile, migrations.RunPython.noop)]
