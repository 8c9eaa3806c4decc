"""The URLs of the site API's own worker pool (``SERVE=api``): the API and the health
check, nothing else, so that no page traffic reaches the processes sites depend on."""

from django.urls import include, path

from dashboard import views

urlpatterns = [
    path("api/v1/", include("federation.urls")),
    path("healthz", views.healthz, name="healthz"),
]
