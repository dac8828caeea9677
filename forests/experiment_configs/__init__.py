"""The import path config files written before the configs moved to ``prmsite.core.configs`` use."""
