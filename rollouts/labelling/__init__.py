"""Human step labelling: the labelling pages, the agreement of labellers and the consensus export.

Pure modules (no Django import, tested directly): ``rules`` (a person's ratings to a stored label), ``agreement``
(Cohen's and Fleiss' kappa, first-error agreement), ``consensus`` (steps where sources agree), ``stepwise`` (the
``stepwise`` dataset writer). Django modules: ``services`` (writes), ``selectors`` (reads of the labelling pages),
``stats`` (reads of the staff page: progress, labellers, agreement), ``exports`` (the consensus set), ``forms``,
``access`` (who may see what), ``views`` (the labeller's pages), ``staff_views``, ``urls``.
"""
