from django.urls import path

from federation import api

app_name = "api"
urlpatterns = [
    path("openapi.json", api.openapi, name="openapi"),
    path("site", api.site_detail, name="site"),
    path("site/data", api.site_data, name="site-data"),
    path("site/identity", api.site_identity, name="site-identity"),
    path("work", api.work, name="work"),
    path("contributions/<int:contribution_id>", api.contribution_result, name="contribution"),
    path(
        "federations/<int:federation_id>/models/<int:version>",
        api.model_download,
        name="model-download",
    ),
]
