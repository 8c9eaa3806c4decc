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


class CapForm(forms.Form):
    """A site owner's own limit on the epsilon the site spends in one federation.

    Parses a number or nothing; federation.budget.membership_set_cap decides what
    a cap may be. Each membership's form has its own ids, as one page shows several.
    """

    epsilon_cap = forms.FloatField(
        required=False,
        help_text="Work that would take this site past its cap leaves it out. "
        "Empty: no cap of its own, the federation's target only.",
    )

    def __init__(self, *args: Any, membership: Membership, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", f"id_cap_{membership.id}_%s")
        cap = membership.epsilon_cap
        kwargs.setdefault("initial", {"epsilon_cap": f"{cap:g}" if cap is not None else None})
        super().__init__(*args, **kwargs)
        self.membership = membership
        self.fields["epsilon_cap"].label = f"Epsilon cap in {membership.federation.name}"
