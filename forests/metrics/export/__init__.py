"""Preference and step-level datasets from a forest. Pure: no Django.

- ``names``: the kind names; ``options``: ``ExportOptions``, the one check of every export parameter;
- ``source``: what every kind reads (``ExportSource``) and what it tallies (``ExportTally``);
- ``registry``: kind name -> kind module (``kinds/<name>.py``, holding the kind's schema and its builder);
  ``features_of`` and ``export_batches`` go through it;
- ``context`` and ``paths``: the column helpers the kinds build with, and what the path-based kinds share;
- ``writer``: the generic writer of column batches (jsonl, parquet, ``save_to_disk``), used by other apps too.

Adding a kind is adding one module under ``kinds/`` and its name to ``names.KINDS``.
"""
