"""The console's URLs: the root URLconf of ``site_console``, which serves these alone
(never the coordinator's pages or API)."""

from django.urls import include, path

from worker.console import app

pages = [
    path("", app.fleet_page, name="fleet"),
    path("fleet.csv", app.fleet_csv, name="fleet_csv"),
    path("worth/", app.worth_page, name="worth"),
    path("worth/publish/", app.publish_worth, name="publish"),
    path("sent/", app.sent_page, name="sent"),
    path("peers/", app.peers_page, name="peers"),
    path("budget/", app.budget_page, name="budget"),
]

urlpatterns = [path("", include((pages, "console")))]
