"""Built-in experiment configs: one module per config, each holding a class ``Config``."""
