from django.urls import path

from sessions_app.consumers import VoiceConsumer

websocket_urlpatterns = [
    path("ws/voice", VoiceConsumer.as_asgi()),
    path("ws/voice/", VoiceConsumer.as_asgi()),
]
