"""Accounts: signing up (signing in and out are Django's own views)."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render


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
