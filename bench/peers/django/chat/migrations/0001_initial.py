from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Message",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("room", models.CharField(max_length=64)),
                ("seq", models.BigIntegerField()),
                ("username", models.CharField(max_length=32)),
                ("content", models.TextField()),
                ("client_id", models.CharField(max_length=64, null=True)),
                ("timestamp", models.DateTimeField()),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("room", "seq"), name="message_room_seq"),
                ],
            },
        ),
    ]
