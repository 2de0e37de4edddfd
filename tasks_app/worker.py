"""The channel-layer worker that runs task handlers apart from the socket workers.

Serve it with ``python manage.py runworker --layer tasks voice-tasks`` (used when
``TASK_RUNNER=worker``, the default with ``REDIS_URL``). The ``tasks`` layer is list-based, so
a task sent while no worker listens waits for one; several workers share the queue.
Channels runs ``SyncConsumer`` handlers in a thread.
"""

from channels.consumer import SyncConsumer

from tasks_app.services import task_run


class TaskWorker(SyncConsumer):
    def task_run(self, message):
        """Run one queued task."""
        task_run(task_id=str(message.get("task_id", "")), claimed=bool(message.get("claimed")))
