"""URLs of the Turbofan Tycoon: the game, the analyst replay, the model page and their JSON API."""

from django.urls import path

from dashboard import tycoon, tycoon_game

app_name = "tycoon"
urlpatterns = [
    path("", tycoon.tycoon_page, name="tycoon"),
    path("play/", tycoon_game.game_page, name="play"),
    path("models/", tycoon.models_page, name="models"),
    path("api/simulate", tycoon.simulate_api, name="api-simulate"),
    path("api/game", tycoon_game.game_api, name="api-game"),
    path("api/models", tycoon.models_api, name="api-models"),
    path("api/trajectory", tycoon.trajectory_api, name="api-trajectory"),
]
