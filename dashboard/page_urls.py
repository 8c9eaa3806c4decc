from django.urls import path

from federation import views

app_name = "pages"
urlpatterns = [
    path("accounts/signup/", views.signup, name="signup"),
    path("federations/", views.federation_list, name="federations"),
    path("federations/<int:federation_id>/", views.federation_detail, name="federation"),
    path(
        "federations/<int:federation_id>/progress.json",
        views.federation_progress,
        name="federation-progress",
    ),
    path("federations/<int:federation_id>/fleet/", views.fleet_health, name="fleet"),
    path(
        "federations/<int:federation_id>/fleet/queries/",
        views.query_new,
        name="query-new",
    ),
    path(
        "federations/<int:federation_id>/fleet/queries/<int:query_id>.json",
        views.query_status,
        name="query-status",
    ),
    path(
        "federations/<int:federation_id>/start/",
        views.federation_start,
        name="federation-start",
    ),
    path(
        "federations/<int:federation_id>/memberships/<int:membership_id>/approve/",
        views.membership_approve,
        name="membership-approve",
    ),
    path(
        "federations/<int:federation_id>/memberships/<int:membership_id>/suspend/",
        views.membership_suspend,
        name="membership-suspend",
    ),
    path(
        "federations/<int:federation_id>/models/<int:version>/",
        views.model_download,
        name="model-download",
    ),
    path("sites/", views.my_sites, name="my-sites"),
    # Before <slug:name>: forms.RESERVED_SITE_NAMES keeps a site from being called "new".
    path("sites/new/", views.site_new, name="site-new"),
    path("sites/<slug:name>/", views.site_detail, name="site"),
    path("sites/<slug:name>/join/", views.site_join, name="site-join"),
    path("sites/<slug:name>/participation/", views.site_participation, name="site-participation"),
    path("sites/<slug:name>/credential/", views.site_credential, name="site-credential"),
    path(
        "sites/<slug:name>/memberships/<int:membership_id>/leave/",
        views.membership_leave,
        name="membership-leave",
    ),
    path(
        "sites/<slug:name>/memberships/<int:membership_id>/cap/",
        views.membership_cap,
        name="membership-cap",
    ),
]
