"""The session event path, as a small interface that apps below sessions can call.

Every event a client sees goes through ``sessions_app.services.session_aemit`` (next ``seq``,
replay buffer, group send). ``tasks_app`` must reach it without importing ``sessions_app``
(imports run one way: sessions use tasks), so the sessions app registers its functions here
at start (``SessionsAppConfig.ready``) and tasks call them through this module.
"""

from collections.abc import Awaitable, Callable

_emit: Callable[..., Awaitable[dict | None]] | None = None
_message_add: Callable[..., Awaitable[None]] | None = None


def register(
    *, emit: Callable[..., Awaitable[dict | None]], message_add: Callable[..., Awaitable[None]]
) -> None:
    """Both are ``async def``: ``session_aemit`` and ``asession_message_add``."""
    global _emit, _message_add
    _emit, _message_add = emit, message_add


async def session_aemit(*, session_id: str, event: dict, broadcast: bool = True) -> dict | None:
    """Give ``event`` the session's next seq, buffer it, and send it to its sockets."""
    if _emit is None:
        raise RuntimeError("no session event path registered (is sessions_app installed?)")
    return await _emit(session_id=session_id, event=event, broadcast=broadcast)


async def asession_message_add(*, session_id: str, role: str, text: str) -> None:
    """Keep a message (sealed) in the session's history."""
    if _message_add is None:
        raise RuntimeError("no session event path registered (is sessions_app installed?)")
    await _message_add(session_id=session_id, role=role, text=text)
