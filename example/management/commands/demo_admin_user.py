from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the demo superuser admin/admin (only with DEBUG on)."

    def handle(self, **options: Any) -> None:
        from django.conf import settings

        if not settings.DEBUG:
            raise CommandError("Refusing to create a demo admin user with DEBUG off.")
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", "admin")
            self.stdout.write("Created the demo superuser admin (password admin).")
