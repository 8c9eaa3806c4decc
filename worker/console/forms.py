"""The console's settings: the site's own economics and plan, from the query string."""

from __future__ import annotations

from typing import Any

from django import forms

from turbofan.tycoon import Economics

_DEFAULT = Economics()
PLAN_HORIZON = 30  # cycles ahead the plan looks by default
MAX_THRESHOLD = 100  # the models predict at most 125 (their cap): a higher one pulls at once


class SettingsForm(forms.Form):
    """Money, downtime and the plan, with the original Tycoon's values as defaults."""

    revenue_per_cycle = forms.FloatField(
        label="Revenue per engine-cycle ($)",
        min_value=0,
        max_value=1e6,
        initial=_DEFAULT.revenue_per_cycle,
    )
    maintenance_cost = forms.FloatField(
        label="Maintenance cost ($)",
        min_value=0,
        max_value=1e9,
        initial=_DEFAULT.maintenance_cost,
    )
    maintenance_downtime = forms.IntegerField(
        label="Maintenance downtime (cycles)",
        min_value=0,
        max_value=10_000,
        initial=_DEFAULT.maintenance_downtime,
    )
    failure_cost = forms.FloatField(
        label="Failure cost ($)",
        min_value=0,
        max_value=1e9,
        initial=_DEFAULT.failure_cost,
    )
    failure_downtime = forms.IntegerField(
        label="Failure downtime (cycles)",
        min_value=0,
        max_value=10_000,
        initial=_DEFAULT.failure_downtime,
    )
    horizon = forms.IntegerField(
        label="Plan ahead (cycles)",
        min_value=1,
        max_value=1_000,
        initial=PLAN_HORIZON,
    )
    threshold = forms.IntegerField(
        label="Or pull when the predicted RUL is below (cycles)",
        min_value=1,
        max_value=MAX_THRESHOLD,
        required=False,
        error_messages={
            "max_value": f"Enter at most {MAX_THRESHOLD}: the models predict at most 125 "
            "cycles (their cap), so a threshold near it pulls every engine at once."
        },
    )

    def __init__(self, data: Any = None) -> None:
        initial = {name: field.initial for name, field in self.base_fields.items()}
        # Fields missing from the query keep their default; those given are checked.
        merged = {**initial, **{k: v for k, v in (data or {}).items() if k in initial}}
        super().__init__(merged)

    def economics(self) -> Economics:
        """The money and downtimes; the replay keeps its own horizon (``horizon`` here is
        how far the plan looks ahead)."""
        money = {k: v for k, v in self.cleaned_data.items() if k != "horizon"}
        return Economics.of(money)
