"""Experiment configs: how a dataset becomes the roots of a forest, and the generation settings a worker needs.

A config is a Python module named ``[a-z_]+`` holding a class ``Config`` that subclasses
:class:`prmsite.core.configs.interfaces.RolloutConfig`. Built-in configs live in
``prmsite/core/configs/rollout/``; a team can keep more in its own repository and list that folder in
``EXPERIMENT_CONFIG_DIRS``. A template JSON file of the rollout-generator format is accepted too
(see :mod:`prmsite.core.configs.loader`).
"""
