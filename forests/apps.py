from django.apps import AppConfig

from rollouts.labelling.step_values import mc_values_register


class ForestsConfig(AppConfig):
    name = "forests"
    verbose_name = "Forests"

    def ready(self) -> None:
        from forests.labelling_values import forest_mc_values  # noqa: PLC0415 (models load once the registry is ready)

        mc_values_register(forest_mc_values)
