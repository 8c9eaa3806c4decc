from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("federation.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("dashboard.page_urls")),
    path("", include("dashboard.urls")),
    path("tycoon/", include("dashboard.tycoon_urls")),
]
