"""`manage.py apitoken create USER --name N --scopes read,ask [--days N]`, `list [USER]`,
`revoke ID`: personal API tokens from the command line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiToken
from accounts.tokens import TokenInputError, token_create, token_revoke


class Command(BaseCommand):
    help = "Create, list and revoke personal API tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = actions.add_parser("create", help="Issue a token; its secret is printed once.")
        create.add_argument("username")
        create.add_argument("--name", required=True, help="What the token is for.")
        create.add_argument("--scopes", required=True, help="Comma-separated: read, ask, ingest.")
        create.add_argument(
            "--days", type=int, default=None, help="Lifetime in days (default from settings)."
        )
        listing = actions.add_parser("list", help="List tokens, of one user or of everyone.")
        listing.add_argument("username", nargs="?")
        revoke = actions.add_parser("revoke", help="Revoke a token by its id.")
        revoke.add_argument("token_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            self._create(options)
        elif action == "list":
            self._list(options.get("username"))
        else:
            self._revoke(options["token_id"])

    def _user(self, username: str) -> Any:
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist as missing:
            raise CommandError(f"No user named {username!r}.") from missing

    def _create(self, options: dict[str, Any]) -> None:
        user = self._user(options["username"])
        try:
            issued = token_create(
                user=user, name=options["name"], scopes=[options["scopes"]], days=options["days"]
            )
        except TokenInputError as error:
            raise CommandError(str(error)) from error
        token = issued.token
        expires = token.expires_at.isoformat() if token.expires_at else "never"
        self.stderr.write(
            f"Token {token.id} “{token.name}” for {user.get_username()}: scopes "
            f"{token.scopes_text}, expires {expires}. The secret below is shown only once."
        )
        # The secret alone on stdout, so that scripts can capture it.
        self.stdout.write(issued.secret)

    def _list(self, username: str | None) -> None:
        tokens = ApiToken.objects.select_related("user").order_by("user__username", "-created_at")
        if username:
            tokens = tokens.filter(user=self._user(username))
        self.stdout.write(
            f"{'ID':>5}  {'USER':<16} {'NAME':<24} {'PREFIX':<14} {'SCOPES':<18} "
            f"{'EXPIRES':<17} {'LAST USED':<17} STATUS"
        )
        for token in tokens:
            self.stdout.write(
                f"{token.id:>5}  {token.user.get_username():<16} {token.name[:24]:<24} "
                f"{token.prefix:<14} {','.join(token.scopes):<18} "
                f"{_when(token.expires_at, 'never'):<17} {_when(token.last_used_at, '-'):<17} "
                f"{token.status}"
            )

    def _revoke(self, token_id: int) -> None:
        token = ApiToken.objects.select_related("user").filter(id=token_id).first()
        if token is None:
            raise CommandError(f"No token with id {token_id}.")
        if token_revoke(token=token, actor=None):
            self.stdout.write(f"Revoked token {token.id} “{token.name}” of {token.user}.")
        else:
            self.stdout.write(f"Token {token.id} was already revoked.")


def _when(moment: Any, empty: str) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else empty
