"""Task handlers, registered by type in ``settings.TASK_HANDLERS``.

A handler is a plain function ``handle(*, task: dict, payload: dict) -> dict``. It runs off
the event loop (a thread, or a ``runworker`` process), may take long, and may raise: the task
then ends ``failed``. Its ``error_message`` is the text of a :class:`HandlerError`, which the
handler writes for users, or else only the exception's class name, so no user data leaks.
"""


class HandlerError(Exception):
    """A failure whose message is safe to show to the user (it carries no user data)."""
