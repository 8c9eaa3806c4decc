from django.contrib import admin
from django.urls import include, path

from federation.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("dashboard.page_urls")),
    path("", include("dashboard.urls")),
    path("tycoon/", include("dashboard.tycoon_urls")),
]
