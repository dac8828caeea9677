"""Forest growth: what a forest grows next and the writes that apply it.

Modules: ``policies`` (the pure decisions, no Django), ``plan`` (the growth plan and planning), ``queue`` (expansion
claims and leases), ``bookkeeping`` (arriving rollouts counted against their tree and expansion), ``delete``,
``selectors`` (reads) and ``api`` (the growth endpoints).
"""
