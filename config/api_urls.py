"""The URLs of the site API's own worker pool (``SERVE=api``): the API and the health
check, nothing else, so that no page traffic reaches the processes sites depend on."""

from django.urls import path

from dashboard import views
from federation.api import api

urlpatterns = [
    path("api/v1/", api.urls),
    path("healthz", views.healthz, name="healthz"),
]
