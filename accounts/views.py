"""The portal page where people manage their own API tokens."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import TokenCreateForm
from accounts.tokens import IssuedToken, TokenInputError, token_create, tokens_of
from accounts.tokens import token_revoke as token_revoke_service


def _signed_in_user(request: HttpRequest) -> User:
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The user's tokens and the form for a new one; a new secret is on this response only."""
    user = _signed_in_user(request)
    issued: IssuedToken | None = None
    form = TokenCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            issued = token_create(
                user=user,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                days=form.cleaned_data["days"],
            )
        except TokenInputError as error:
            form.add_error(None, str(error))
        else:
            form = TokenCreateForm()
    context = {
        "form": form,
        "issued": issued,
        "tokens": tokens_of(user).select_related("revoked_by"),
        "now": timezone.now(),
    }
    return render(request, "accounts/tokens.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    user = _signed_in_user(request)
    token = get_object_or_404(tokens_of(user), id=token_id)
    if token_revoke_service(token=token, actor=user):
        messages.success(request, f"Revoked “{token.name}”. It stops working at once.")
    else:
        messages.info(request, f"“{token.name}” was already revoked.")
    return redirect("accounts:token-list")
