"""Forms of the browser pages: they parse and check input, nothing more."""

from __future__ import annotations

from typing import Any

from django import forms

from federation.core.analytics import MAX_BINS
from federation.models import Federation, Membership, Site
from turbofan.data.files import SENSOR_COLUMNS
from turbofan.data.sensors import sensor_label

# Path segments under /sites/ that a site's name would shadow.
RESERVED_SITE_NAMES = frozenset({"new"})


class SiteForm(forms.Form):
    name = forms.SlugField(
        max_length=50,
        help_text="Letters, digits, hyphens and underscores; other members see this name.",
        error_messages={
            "invalid": "Use only letters, digits, hyphens (-) and underscores (_) in the "
            "name, with no spaces: e.g. north-hangar.",
            "max_length": "Keep the name to 50 characters at most.",
            "required": "Give the site a name: e.g. north-hangar.",
        },
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


SENSOR_CHOICES = [(name, sensor_label(name)) for name in SENSOR_COLUMNS]
DEFAULT_BINS = 40


class QueryForm(forms.Form):
    """An analytics query as the admin asks it on the fleet page.

    Parses sensors, per regime, histograms and an optional noise multiplier into the
    query dict that ``services.analytics_request`` takes; the service and the core
    decide what a valid query is. ``ranges`` are the default histogram ranges per sensor
    (``selectors.histogram_defaults``).
    """

    sensors = forms.MultipleChoiceField(
        choices=SENSOR_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="The fleet's varying sensors are ticked: the others are constant.",
    )
    per_regime = forms.BooleanField(
        required=False,
        label="Per operating regime, too",
    )
    histograms = forms.BooleanField(
        required=False,
        initial=True,
        label="Histograms and quantiles",
        help_text="Quantiles are read off the histogram: each is within one bin width of "
        "the rows' own quantile.",
    )
    bins = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_BINS,
        initial=DEFAULT_BINS,
        label="Bins per histogram",
    )
    low = forms.FloatField(required=False, label="Histogram from")
    high = forms.FloatField(
        required=False,
        label="Histogram to",
        help_text="One range for every chosen sensor. Leave both empty: each sensor over the "
        "fleet's mean ± 4 std from the setup rounds (its public range before them).",
    )
    noise_multiplier = forms.FloatField(
        required=False,
        label="Noise multiplier (differential privacy)",
        help_text="Each site adds its share of Gaussian noise, and the query spends the "
        "federation's privacy budget. Empty: exact statistics, no budget spent.",
    )

    def __init__(
        self,
        *args: Any,
        federation: Federation,
        ranges: dict[str, tuple[float, float]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.ranges = ranges
        pipeline = federation.pipeline or {}
        self.fields["sensors"].initial = pipeline.get("sensors") or []
        if not pipeline.get("sensors"):
            self.fields["sensors"].help_text = "Pick at least one."
        if not federation.regimes:
            field = self.fields["per_regime"]
            field.disabled = True
            field.help_text = (
                "Available once the federation has found its operating regimes, in its "
                "first setup round."
            )
        if not federation.privacy:
            del self.fields["noise_multiplier"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if (data.get("low") is None) != (data.get("high") is None):
            raise forms.ValidationError(
                "Give both ends of the histogram range, or leave both empty for defaults."
            )
        return data

    def query(self) -> dict[str, Any]:
        """The query dict of ``federation.core.analytics.Query``, from valid data."""
        data = self.cleaned_data
        sensors = list(data["sensors"])
        bins = []
        if data["histograms"]:
            for name in sensors:
                low, high = self.ranges[name]
                if data["low"] is not None:
                    low, high = data["low"], data["high"]
                count = data["bins"] or DEFAULT_BINS
                bins.append({"sensor": name, "low": low, "high": high, "count": count})
        return {"sensors": sensors, "per_regime": bool(data["per_regime"]), "bins": bins}
