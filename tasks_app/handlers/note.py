def handle(*, task: dict, payload: dict) -> dict:
    """A note, kept (sealed) with the task until its TTL."""
    return {"text": payload["text"]}
