"""The tasks app's errors, each mapped to its HTTP status by ``core.errors.exception_handler``."""

from core.errors import Conflict, NotFound


class TaskNotFound(NotFound):
    default_detail = "Task not found"


class TooManyTasks(Exception):
    """The session already holds ``MAX_TASKS_PER_SESSION`` tasks."""


class IllegalTransition(Conflict):
    default_detail = "Task state does not allow this"

    def __init__(self, current: str, target: str):
        super().__init__(f"Task is {current}; it cannot become {target}")
        self.current = current
