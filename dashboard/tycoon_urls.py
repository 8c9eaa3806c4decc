"""URLs of the Turbofan Tycoon: the replay, the model page and their JSON API."""

from django.urls import path

from dashboard import tycoon

app_name = "tycoon"
urlpatterns = [
    path("", tycoon.tycoon_page, name="tycoon"),
    path("models/", tycoon.models_page, name="models"),
    path("api/simulate", tycoon.simulate_api, name="api-simulate"),
    path("api/models", tycoon.models_api, name="api-models"),
    path("api/trajectory", tycoon.trajectory_api, name="api-trajectory"),
]
