from voiceproject.clock import iso


def handle(*, task: dict, payload: dict) -> dict:
    """A reminder: its text and when it is due (the socket announces it then)."""
    return {"text": payload["text"], "due_at": iso(payload["due_at"]), "due_ts": payload["due_at"]}
