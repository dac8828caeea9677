"""``python manage.py create_worker_token NAME``: an API token for a worker; the token is the last line printed."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = (
        "Create a user NAME for a worker (no password, not staff) with an API token, and print the token as the last "
        "line. A NAME that already has a token gets it printed again; --rotate replaces it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", type=str, help="Worker (user) name.")
        parser.add_argument(
            "--rotate", action="store_true", help="Replace the existing token (workers using it get 401)."
        )

    def handle(self, *args, name: str, rotate: bool, **options) -> None:
        name = name.strip()
        if not name:
            raise CommandError("NAME must not be empty.")
        user_model = get_user_model()
        with transaction.atomic():
            user, created_user = user_model.objects.get_or_create(**{user_model.USERNAME_FIELD: name})
            if created_user:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            if not user.is_active:
                raise CommandError(f"User {name!r} is inactive; reactivate it in the admin first.")
            token = Token.objects.filter(user=user).first()
            if token is not None and rotate:
                token.delete()
                token = None
            status = "existing token" if token is not None else "new token"
            if token is None:
                token = Token.objects.create(user=user)
        who = "new user" if created_user else "user"
        self.stdout.write(self.style.SUCCESS(f"{status} for {who} {name!r}; pass it as 'Authorization: Token …':"))
        self.stdout.write(token.key)
