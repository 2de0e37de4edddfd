from django.urls import path

from sessions_app.consumers import VoiceConsumer
from sessions_app.realtime_openai import RealtimeConsumer
from sessions_app.twilio_consumer import TwilioConsumer

websocket_urlpatterns = [
    path("ws/voice", VoiceConsumer.as_asgi()),
    path("ws/voice/", VoiceConsumer.as_asgi()),
    # Twilio Media Streams (CONTRACT 2c)
    path("ws/twilio", TwilioConsumer.as_asgi()),
    path("ws/twilio/", TwilioConsumer.as_asgi()),
    # OpenAI-Realtime-compatible transcription (docs/protocol.md): the openai SDK's
    # realtime client with base_url="http://HOST/v1" connects here.
    path("v1/realtime", RealtimeConsumer.as_asgi()),
]
