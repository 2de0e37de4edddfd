from core.clock import iso_in


def handle(*, task: dict, payload: dict) -> dict:
    """A reminder, run when it falls due: its text and due time in the session's zone."""
    zone = payload.get("zone") or "UTC"
    return {
        "text": payload["text"],
        "due_at": iso_in(payload["due_at"], zone),
        "due_ts": payload["due_at"],
        "timezone": zone,
    }
