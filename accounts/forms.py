from __future__ import annotations

from django import forms
from django.conf import settings

from accounts.models import TokenScope
from accounts.tokens import NAME_MAX_CHARS, TokenInputError, expiry_for


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=NAME_MAX_CHARS,
        help_text="What the token is for, e.g. “laptop chat client” or “nightly upload”.",
    )
    scopes = forms.MultipleChoiceField(
        choices=TokenScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[TokenScope.READ, TokenScope.ASK],
        error_messages={"required": "Choose at least one scope."},
    )
    days = forms.IntegerField(
        label="Expires after (days)",
        min_value=0,
        initial=settings.API_TOKEN_DEFAULT_DAYS,
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        never = " 0 means never." if settings.API_TOKEN_ALLOW_NO_EXPIRY else ""
        self.fields["days"].initial = settings.API_TOKEN_DEFAULT_DAYS
        self.fields["days"].help_text = f"At most {settings.API_TOKEN_MAX_DAYS}.{never}"

    def clean_days(self) -> int:
        days: int = self.cleaned_data["days"]
        try:
            expiry_for(days)
        except TokenInputError as error:
            raise forms.ValidationError(str(error)) from error
        return days
