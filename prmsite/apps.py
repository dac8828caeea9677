from django.apps import AppConfig


class PrmsiteConfig(AppConfig):
    name = "prmsite"
    verbose_name = "prmsite"

    def ready(self) -> None:
        from prmsite import checks  # noqa: F401  (registers the system checks)
