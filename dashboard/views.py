from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from dashboard.selectors import service_status
from turbofan.data.sensors import PARTS, SENSORS


def home(request: HttpRequest) -> HttpResponse:
    # How the installation is wired (database, broker, data folder) is for its staff only.
    status = service_status() if request.user.is_staff else None
    return render(request, "dashboard/home.html", {"status": status})


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and the demo runner."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # any database failure means "not ready"
        return JsonResponse({"status": "error", "database": str(error)}, status=503)
    return JsonResponse({"status": "ok", "database": connection.vendor})


def glossary(request: HttpRequest) -> HttpResponse:
    """The words of federated learning and of the C-MAPSS data, in plain terms."""
    sensors = [{"column": column, **sensor._asdict()} for column, sensor in SENSORS.items()]
    return render(request, "dashboard/glossary.html", {"sensors": sensors, "parts": PARTS})
