"""Accounts: signing up, and where a signed-in user lands (signing in and out are
Django's own views)."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from federation.models import Federation, Membership


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("pages:my-sites")
    form: UserCreationForm[User] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # The new account signs in with the password it just set: the model backend (the
        # login throttle stands in front of password checks, not of a fresh account).
        login(request, form.save(), backend="django.contrib.auth.backends.ModelBackend")
        return redirect("pages:my-sites")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def landing(request: HttpRequest) -> HttpResponse:
    """Where signing in leads: the admin of federations to the one with the most
    requests waiting for approval (else the newest it runs), everyone else to their sites.
    """
    administered = (
        Federation.objects.filter(admin_id=request.user.pk)
        .annotate(
            pending=Count("memberships", filter=Q(memberships__status=Membership.Status.REQUESTED))
        )
        .order_by("-pending", "-id")
        .first()
    )
    if administered is not None:
        return redirect("pages:federation", federation_id=administered.id)
    return redirect("pages:my-sites")
