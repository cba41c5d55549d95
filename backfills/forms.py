"""The admin's "Start backfill" form; a backfill's own `Parameters` form sits beside it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from backfills.conf import backfills_settings
from backfills.registry import registry


class StartBackfillForm(forms.Form):
    backfill = forms.ChoiceField(label=_("Backfill"))
    batch_size = forms.IntegerField(required=False)  # replaced in __init__
    dry_run = forms.BooleanField(
        label=_("Dry run"),
        required=False,
        help_text=_("Process every batch in a transaction that is rolled back."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        backfill = self.fields["backfill"]
        assert isinstance(backfill, forms.ChoiceField)
        backfill.choices = [("", "---------")] + [
            (backfill.name, f"{backfill.name} ({backfill.model._meta.label})")
            for backfill in registry.all()
        ]
        # The maximum is a setting, read when the form is built.
        self.fields["batch_size"] = forms.IntegerField(
            label=_("Batch size"),
            required=False,
            min_value=1,
            max_value=backfills_settings.max_batch_size,
            help_text=_("Rows per batch; empty for the backfill's own default."),
        )


def parameters_form(backfill_name: str | None, data: Any = None) -> forms.Form | None:
    """The chosen backfill's `Parameters` form, prefixed so its names cannot clash."""
    if not backfill_name or backfill_name not in registry:
        return None
    form_class = registry.get(backfill_name).Parameters
    if form_class is None:
        return None
    return form_class(data=data, prefix="param")
