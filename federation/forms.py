"""Forms of the browser pages: they parse and check input, nothing more."""

from __future__ import annotations

from typing import Any

from django import forms

from federation.models import Federation, Membership, Site

# Path segments under /sites/ that a site's name would shadow.
RESERVED_SITE_NAMES = frozenset({"new"})


class SiteForm(forms.Form):
    name = forms.SlugField(
        max_length=50,
        help_text="Letters, digits, hyphens and underscores; other members see this name.",
    )

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if name in RESERVED_SITE_NAMES:
            raise forms.ValidationError(f"{name!r} is reserved: pick another name")
        return name


class JoinForm(forms.Form):
    """Ask to join a federation the site is not (or no longer) part of."""

    federation = forms.ModelChoiceField(queryset=Federation.objects.none())

    def __init__(self, *args: Any, site: Site, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = Membership.objects.filter(site=site).exclude(status=Membership.Status.LEFT)
        field = self.fields["federation"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Federation.objects.exclude(
            id__in=current.values("federation_id")
        ).order_by("name")


class ParticipationForm(forms.Form):
    status = forms.ChoiceField(choices=Site.Status.choices)
