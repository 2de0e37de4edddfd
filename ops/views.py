"""``/ops/``: staff-only pages in the Django admin's look. Interfaces only: selectors read,
services act (the same services the API uses)."""

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from core.ids import parse_uuid
from ops import selectors, services
from tasks_app.errors import IllegalTransition, TaskNotFound
from tasks_app.states import STATES

PAGE = 50


def _page(request, title: str, template: str, **context):
    return render(
        request, f"ops/{template}", {**admin.site.each_context(request), "title": title, **context}
    )


@csrf_protect
@staff_member_required
def sessions(request):
    """Live sessions, across all workers, a page at a time."""
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        page = 1
    total, rows = selectors.ops_sessions(offset=(page - 1) * PAGE, limit=PAGE)
    return _page(
        request, "Live voice sessions", "sessions.html",
        rows=rows, total=total, page=page,
        has_next=page * PAGE < total, has_previous=page > 1,
    )  # fmt: skip


@csrf_protect
@staff_member_required
def session_detail(request, session_id: str):
    """One session: its figures and its tasks, never what was said."""
    sid = parse_uuid(session_id)
    detail = selectors.ops_session(session_id=sid) if sid else None
    if detail is None:
        raise Http404("Session not found")
    return _page(request, f"Session {sid[:8]}", "session.html", session=detail)


@csrf_protect
@staff_member_required
@require_POST
def session_close(request, session_id: str):
    """Close a session: its live socket gets 1000, as with DELETE."""
    sid = parse_uuid(session_id)
    if sid and services.ops_close_session(session_id=sid):
        messages.success(request, f"Session {sid[:8]} closed.")
    else:
        messages.warning(request, "That session is no longer live.")
    return redirect("ops:sessions")


@csrf_protect
@staff_member_required
def tasks(request):
    """The newest tasks, filtered by state and type."""
    state = request.GET.get("state") or None
    task_type = request.GET.get("type") or None
    if state not in (None, *STATES):
        state = None
    rows = selectors.ops_tasks(state=state, task_type=task_type)
    return _page(
        request, "Tasks", "tasks.html",
        rows=rows, states=STATES, state=state, task_type=task_type or "",
    )  # fmt: skip


@csrf_protect
@staff_member_required
@require_POST
def task_cancel(request, task_id: str):
    """Cancel a pending task (409 rules apply: a finished task stays as it is)."""
    tid = parse_uuid(task_id)
    try:
        if tid is None:
            raise TaskNotFound()
        services.ops_cancel_task(task_id=tid)
        messages.success(request, f"Task {tid[:8]} cancelled.")
    except (TaskNotFound, IllegalTransition) as exc:
        messages.warning(request, str(exc.detail))
    return redirect(_local_path(request, request.POST.get("next")) or "ops:tasks")


def _local_path(request, target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return None
    return target


@csrf_protect
@staff_member_required
def health(request):
    """Cache, channel layer, workers seen, recognizer pool."""
    return _page(request, "System health", "health.html", health=selectors.ops_health())
