from django.apps import AppConfig


class ForestsConfig(AppConfig):
    name = "forests"
    verbose_name = "Forests"
