def handle(*, task: dict, payload: dict) -> dict:
    """A to-do item on the user's list."""
    return {"text": payload["text"], "done": False}
