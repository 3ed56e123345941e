from django.urls import re_path

from . import consumers

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<room_name>[a-z0-9_-]{1,64})/?$", consumers.ChatConsumer.as_asgi()),
]
