"""Forms of the document pages and of the Django admin's upload page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import UploadedFile

from ingestion.services import upload_size_refusal

# The code of the form error for a file over the size limit: the pages answer it with 413.
TOO_LARGE = "too_large"


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that takes any number of files from one input."""

    widget = MultipleFileInput

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile[Any]]:
        if isinstance(data, list | tuple):
            files = [super(MultipleFileField, self).clean(item, initial) for item in data]
        else:
            files = [super().clean(data, initial)]
        return [file for file in files if file]


def _groups_field() -> forms.ModelMultipleChoiceField[Group]:
    return forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Groups that may read",
    )


class UploadForm(forms.Form):
    # The form metaclass moves declared fields off the class, so this does not hide Form.files.
    files = MultipleFileField(  # type: ignore[assignment]
        label="Files",
        error_messages={"required": "Choose at least one file to upload."},
    )
    groups = _groups_field()
    everyone = forms.BooleanField(required=False, label="Everyone may read")

    def clean_files(self) -> list[UploadedFile[Any]]:
        """Refuse the whole upload when a file is over the size limit, before anything is stored."""
        files: list[UploadedFile[Any]] = self.cleaned_data["files"]
        for file in files:
            refusal = upload_size_refusal(file.size or 0)
            if refusal:
                raise forms.ValidationError(
                    f"{file.name}: {refusal} Nothing was stored.", code=TOO_LARGE
                )
        return files


class DocumentAccessForm(forms.Form):
    groups = _groups_field()
    everyone = forms.BooleanField(required=False, label="Everyone may read")


class AdminUploadForm(forms.Form):
    files = MultipleFileField(  # type: ignore[assignment]
        label="Files",
        help_text="A file with the same source path and the same readers as an existing "
        "document becomes its new version.",
        error_messages={"required": "Choose at least one file to upload."},
    )
    source_path = forms.CharField(
        required=False,
        max_length=1024,
        label="Source path",
        help_text="Where the document lives, e.g. policies/travel.pdf. Defaults to the file "
        "name; only used when one file is uploaded.",
    )
    groups = _groups_field()
    is_public = forms.BooleanField(required=False, label="Everyone may read")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("source_path") and len(cleaned.get("files") or []) > 1:
            raise forms.ValidationError(
                "A source path names one document: upload one file with it, or leave it empty."
            )
        return cleaned


class DocumentReviewForm(forms.Form):
    """The owner of a document and the date by which it should be read again."""

    owner = forms.CharField(
        required=False,
        max_length=150,
        label="Owner (user name)",
        help_text="The person who answers for the content. Empty for nobody.",
    )
    review_by = forms.DateField(
        required=False,
        label="Review by",
        help_text="After this date, answers citing the document say it is overdue for review.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_owner(self) -> User | None:
        name = self.cleaned_data["owner"].strip()
        if not name:
            return None
        owner = User.objects.filter(username=name, is_active=True).first()
        if owner is None:
            raise forms.ValidationError(f"There is no active user named “{name}”.")
        return owner
