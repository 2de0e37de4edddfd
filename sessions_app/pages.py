"""The web client at ``/``: a page and two static scripts, no build step."""

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def client(request):
    return render(request, "sessions_app/client.html")


@require_GET
def favicon(request):
    """Browsers ask every page for one; the admin's pages have none. Nothing to send."""
    return HttpResponse(status=204)
