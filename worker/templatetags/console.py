"""Template filters of the site's console."""

from __future__ import annotations

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma

register = template.Library()


@register.filter
def money(value: float | None) -> str:
    """Whole dollars with thousands separators and the sign in front: -$13,615."""
    if value is None:
        return "–"
    amount = intcomma(round(abs(float(value))))
    return f"−${amount}" if round(float(value)) < 0 else f"${amount}"
