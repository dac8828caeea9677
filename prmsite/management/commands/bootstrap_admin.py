"""Make sure a superuser exists and say how to log in: used by `make run` on a fresh machine."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser 'admin' with a random password if no superuser exists, and print how to log in."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin", help="Name of the superuser to create (default: admin).")
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/", help="Admin URL to print.")

    def handle(self, *args, username: str, url: str, **options) -> None:
        users = get_user_model()
        existing = users.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            self.stdout.write(
                f"Admin: {url} — log in as an existing superuser ({existing.get_username()}); "
                f"forgot the password? python manage.py changepassword {existing.get_username()}"
            )
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Created superuser {username!r} with password: {password}"))
        self.stdout.write(
            f"Admin: {url} — user {username}, the password above (shown once; change it with "
            f"python manage.py changepassword {username})"
        )
