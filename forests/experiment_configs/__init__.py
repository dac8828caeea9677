"""Experiment configs: how a dataset becomes the roots of a forest, and the generation settings a worker needs.

A config is a Python module named ``[a-z_]+`` holding a class ``Config`` that subclasses
:class:`forests.experiment_configs.interfaces.RolloutConfig`. Built-in configs live in
``forests/experiment_configs/rollout/``; a team can keep more in its own repository and list that folder in
``EXPERIMENT_CONFIG_DIRS``. A template JSON file of the rollout-generator format is accepted too
(see :mod:`forests.experiment_configs.loader`).
"""
