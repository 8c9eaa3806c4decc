from django.urls import path

from dashboard.pages import accounts, federations, fleet, sites

app_name = "pages"
urlpatterns = [
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/landing/", accounts.landing, name="landing"),
    path("federations/", federations.federation_list, name="federations"),
    path("federations/<int:federation_id>/", federations.federation_detail, name="federation"),
    path(
        "federations/<int:federation_id>/progress.json",
        federations.federation_progress,
        name="federation-progress",
    ),
    path("federations/<int:federation_id>/fleet/", fleet.fleet_health, name="fleet"),
    path(
        "federations/<int:federation_id>/fleet/queries/",
        fleet.query_new,
        name="query-new",
    ),
    path(
        "federations/<int:federation_id>/fleet/queries/<int:query_id>.json",
        fleet.query_status,
        name="query-status",
    ),
    path(
        "federations/<int:federation_id>/start/",
        federations.federation_start,
        name="federation-start",
    ),
    path(
        "federations/<int:federation_id>/extend/",
        federations.federation_extend,
        name="federation-extend",
    ),
    path(
        "federations/<int:federation_id>/memberships/<int:membership_id>/approve/",
        federations.membership_approve,
        name="membership-approve",
    ),
    path(
        "federations/<int:federation_id>/memberships/<int:membership_id>/suspend/",
        federations.membership_suspend,
        name="membership-suspend",
    ),
    path(
        "federations/<int:federation_id>/models/<int:version>/",
        federations.model_download,
        name="model-download",
    ),
    path("sites/", sites.my_sites, name="my-sites"),
    # Before <slug:name>: forms.RESERVED_SITE_NAMES keeps a site from being called "new".
    path("sites/new/", sites.site_new, name="site-new"),
    path("sites/<slug:name>/", sites.site_detail, name="site"),
    path("sites/<slug:name>/join/", sites.site_join, name="site-join"),
    path("sites/<slug:name>/participation/", sites.site_participation, name="site-participation"),
    path("sites/<slug:name>/credential/", sites.site_credential, name="site-credential"),
    path(
        "sites/<slug:name>/memberships/<int:membership_id>/leave/",
        sites.membership_leave,
        name="membership-leave",
    ),
    path(
        "sites/<slug:name>/memberships/<int:membership_id>/cap/",
        sites.membership_cap,
        name="membership-cap",
    ),
]
