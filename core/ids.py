import uuid


def parse_uuid(value: object) -> str | None:
    """The canonical form of a uuid given as text, or None if it is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
