"""The chat consumer as the original Django Channels chat wrote it: save the message, then
group_send it to the room; every member's consumer sends it on to its socket."""

import json
import re
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from .models import Message

USERNAME = re.compile(r"[\w.-]{1,32}")


def dumps(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@database_sync_to_async
def last_seq(room):
    return Message.objects.filter(room=room).aggregate(m=Max("seq"))["m"] or 0


@database_sync_to_async
def save_message(room, username, content, client_id):
    # database_sync_to_async runs every call on one thread, so max + 1 cannot race.
    with transaction.atomic():
        seq = (Message.objects.filter(room=room).aggregate(m=Max("seq"))["m"] or 0) + 1
        message = Message.objects.create(
            room=room,
            seq=seq,
            username=username,
            content=content,
            client_id=client_id,
            timestamp=timezone.now(),
        )
    return {
        "room": room,
        "seq": seq,
        "username": username,
        "content": content,
        "timestamp": message.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "client_id": client_id,
    }


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room_name"]
        query = parse_qs(self.scope["query_string"].decode())
        self.username = (query.get("username") or [""])[0]
        if not USERNAME.fullmatch(self.username):
            await self.close()
            return
        self.group = f"chat_{self.room}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        seq = await last_seq(self.room)
        await self.send(
            text_data=dumps(
                {
                    "type": "welcome",
                    "room": self.room,
                    "username": self.username,
                    "messages": [],
                    "has_more": seq > 0,
                    "last_seq": seq,
                    "online": [],
                    "online_count": 0,
                    "typing": [],
                }
            )
        )

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(frame, dict) or frame.get("type") != "chat_message":
            return
        content = frame.get("message")
        if not isinstance(content, str):
            return
        client_id = frame.get("client_id") if isinstance(frame.get("client_id"), str) else None
        message = await save_message(self.room, self.username, content, client_id)
        await self.channel_layer.group_send(self.group, {"type": "chat.message", "message": message})

    async def chat_message(self, event):
        await self.send(text_data=dumps({"type": "chat_message", "message": event["message"]}))
