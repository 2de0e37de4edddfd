"""The channel-layer worker that runs task handlers apart from the socket workers.

Serve it with ``python manage.py runworker --layer tasks voice-tasks`` (used when
``TASK_RUNNER=worker``, the default with ``REDIS_URL``). The ``tasks`` layer is list-based, so
a task sent while no worker listens waits for one; several workers share the queue.
The task's store steps run on the worker's event loop; its handler, which may block, runs in
a thread (``tasks_app.services.atask_run``).
"""

from channels.consumer import AsyncConsumer

from tasks_app.services import atask_run


class TaskWorker(AsyncConsumer):
    async def task_run(self, message):
        """Run one queued task."""
        await atask_run(
            task_id=str(message.get("task_id", "")), claimed=bool(message.get("claimed"))
        )
