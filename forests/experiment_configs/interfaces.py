"""The old import path of the config interfaces, kept so that a team's config files written against it (``from
prmsite.core.configs.interfaces import DatasetConfig``) still load. New configs import
``prmsite.core.configs.interfaces``; this module only re-exports it."""

from prmsite.core.configs.interfaces import (  # noqa: F401  (re-exported for old config files)
    DatasetConfig,
    RolloutConfig,
    check_label,
    json_safe,
)
from prmsite.core.errors import ConfigError  # noqa: F401  (re-exported for old config files)
