"""One module per export kind, found by ``forests.metrics.export.registry`` under its name. Each holds:

- ``NAME``: the kind's name (one of ``forests.metrics.export.names.KINDS``);
- ``features(options)``: the ``datasets.Features`` of its records (column names, order and types);
- ``batches(context, progress)``: its records as column batches, tree by tree in ascending root id, deterministic
  and without repeats; ``progress(trees_done, trees)`` is called as they go.
"""
