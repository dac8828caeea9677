from django.apps import AppConfig


class PrmsiteConfig(AppConfig):
    name = "prmsite"
    verbose_name = "prmsite"

    def ready(self) -> None:
        from prmsite import checks  # noqa: F401, PLC0415 (registers the system checks once the apps are ready)
