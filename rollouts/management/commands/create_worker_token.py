"""``python manage.py create_worker_token NAME``: a new API token for a worker; the token is the last line printed.

Tokens are stored hashed: this is the only time the token is shown. Each run makes another token for the same
worker (the earlier ones keep working); ``--rotate`` revokes the earlier ones. Revoke a token in the admin
(*Knox | Auth tokens*) or with ``--rotate``.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from knox.models import get_token_model


class Command(BaseCommand):
    help = (
        "Create a user NAME for a worker (no password, not staff) if it does not exist, make it a new API token and "
        "print the token as the last line. Tokens are stored hashed: it is shown this once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", type=str, help="Worker (user) name.")
        parser.add_argument(
            "--rotate", action="store_true", help="Revoke the worker's other tokens (workers using them get 401)."
        )
        parser.add_argument(
            "--expires_in_days", type=float, default=None, help="The token stops working after this many days."
        )

    def handle(self, *args, name: str, rotate: bool, expires_in_days: float | None, **options) -> None:
        name = name.strip()
        if not name:
            raise CommandError("NAME must not be empty.")
        if expires_in_days is not None and expires_in_days <= 0:
            raise CommandError("--expires_in_days must be positive.")
        user_model = get_user_model()
        tokens = get_token_model().objects
        with transaction.atomic():
            user, created_user = user_model.objects.get_or_create(**{user_model.USERNAME_FIELD: name})
            if created_user:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            if not user.is_active:
                raise CommandError(f"User {name!r} is inactive; reactivate it in the admin first.")
            revoked = tokens.filter(user=user).delete()[0] if rotate else 0
            expiry = timedelta(days=expires_in_days) if expires_in_days is not None else None
            _, token = tokens.create(user=user, expiry=expiry)
        who = "new user" if created_user else "user"
        notes = [f"{revoked} earlier token(s) revoked"] if rotate else []
        if expiry is not None:
            notes.append(f"expires in {expires_in_days:g} days")
        extra = f" ({'; '.join(notes)})" if notes else ""
        self.stdout.write(
            self.style.SUCCESS(
                f"New token for {who} {name!r}{extra}. It is stored hashed and shown only now; "
                "pass it as 'Authorization: Token …':"
            )
        )
        self.stdout.write(token)
