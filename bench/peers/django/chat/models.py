from django.db import models


class Message(models.Model):
    room = models.CharField(max_length=64)
    seq = models.BigIntegerField()
    username = models.CharField(max_length=32)
    content = models.TextField()
    client_id = models.CharField(max_length=64, null=True)
    timestamp = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq"),
        ]
