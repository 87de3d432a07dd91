"""The Sources page's forms: adding a source, and what to do with its documents on removal."""

from __future__ import annotations

from django import forms
from django.contrib.auth.models import Group

from sources.models import SourceKind
from sources.options import OptionError, options_parse


class SourceForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=SourceKind.choices)
    location = forms.CharField(
        required=False,
        label="Path or URLs",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The folder's path, the site's start URLs (one a line) or the mailbox's URL.",
    )
    groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Groups that may read",
    )
    everyone = forms.BooleanField(required=False, label="Everyone may read")
    options = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=("KEY=VALUE, one a line. Secrets only as KEY_file=/path or KEY_env=VARIABLE."),
    )
    schedule = forms.CharField(
        required=False,
        max_length=100,
        help_text="Five cron fields, e.g. */30 * * * *; empty: on demand.",
    )

    def clean_options(self) -> dict[str, str]:
        lines = [line for line in self.cleaned_data["options"].splitlines() if line.strip()]
        try:
            return options_parse(lines)
        except OptionError as error:
            # The page is drawn again without what was typed: it may hold a secret in clear.
            data = self.data.copy()  # type: ignore[attr-defined]
            data["options"] = ""
            self.data = data
            raise forms.ValidationError(str(error)) from None


class RemoveForm(forms.Form):
    documents = forms.ChoiceField(
        choices=[
            ("keep", "Keep its documents (they stay searchable, as ordinary documents)"),
            ("delete", "Delete its documents (out of search at once; kept on record)"),
        ],
        widget=forms.RadioSelect,
        label="What becomes of its documents",
    )
