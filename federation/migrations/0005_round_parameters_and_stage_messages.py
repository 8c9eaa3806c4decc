"""Every round, plain or secure, walks stages and keeps its sites' messages as stage
messages: a round's ``secagg`` field becomes its ``parameters`` (with its mode), and a
contribution's payload file goes; the training settings in a federation's model spec are
called ``training``."""

from django.db import migrations, models


def forwards(apps, schema_editor):
    Round = apps.get_model("federation", "Round")
    Federation = apps.get_model("federation", "Federation")
    for round_ in Round.objects.exclude(parameters={}):
        parameters = dict(round_.parameters)
        parameters.setdefault("mode", "secure")
        parameters.setdefault("privacy", None)
        Round.objects.filter(id=round_.id).update(parameters=parameters)
    # A plain round that was running kept its results as files, which no longer count.
    Round.objects.filter(stage="", status__in=["open", "collecting", "aggregating"]).update(
        status="failed", reason="interrupted by an upgrade: start the federation again"
    )
    for federation in Federation.objects.all():
        spec = dict(federation.model_spec or {})
        if "simulation" in spec:
            spec["training"] = spec.pop("simulation")
            Federation.objects.filter(id=federation.id).update(model_spec=spec)


class Migration(migrations.Migration):
    dependencies = [
        ("federation", "0004_analytics_queries"),
    ]

    operations = [
        migrations.RenameField(
            model_name="round",
            old_name="secagg",
            new_name="parameters",
        ),
        migrations.RemoveField(
            model_name="contribution",
            name="payload",
        ),
        migrations.AlterField(
            model_name="stagemessage",
            name="vector",
            field=models.FileField(blank=True, upload_to="vectors/"),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
