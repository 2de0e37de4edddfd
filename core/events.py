"""The session event path, as a small interface that apps below sessions can call.

Every event a client sees goes through ``sessions_app.services.session_emit`` (next ``seq``,
replay buffer, group send). ``tasks_app`` must reach it without importing ``sessions_app``
(imports run one way: sessions use tasks), so the sessions app registers its functions here
at start (``SessionsAppConfig.ready``) and tasks call them through this module.
"""

from collections.abc import Callable

_emit: Callable[..., dict | None] | None = None
_message_add: Callable[..., None] | None = None


def register(*, emit: Callable[..., dict | None], message_add: Callable[..., None]) -> None:
    global _emit, _message_add
    _emit, _message_add = emit, message_add


def session_emit(*, session_id: str, event: dict, broadcast: bool = True) -> dict | None:
    """Give ``event`` the session's next seq, buffer it, and send it to its sockets."""
    if _emit is None:
        raise RuntimeError("no session event path registered (is sessions_app installed?)")
    return _emit(session_id=session_id, event=event, broadcast=broadcast)


def session_message_add(*, session_id: str, role: str, text: str) -> None:
    """Keep a message (sealed) in the session's history."""
    if _message_add is None:
        raise RuntimeError("no session event path registered (is sessions_app installed?)")
    _message_add(session_id=session_id, role=role, text=text)
