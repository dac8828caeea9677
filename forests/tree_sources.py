"""The value sources a tree page can lay over its steps: the exact values, a PRM version's scores (``prm:V``) or a
labelling scheme's step labels (``labels:S``), read for one tree in one query each (``forests.treeview`` turns them
into values)."""

from __future__ import annotations

import math

from forests.metrics.values import LABELLED, version_source
from forests.metrics_reading import label_outputs, value_function_parse
from forests.models import Forest, Node
from forests.treeview import SourceInput
from prmsite.core.domain import PRM_THRESHOLD
from prmsite.core.errors import ApplicationError
from rollouts.models import LabellingScheme, ProcessRewardLabel

EXACT = "exact"  # the page's name for the ``labelled`` value function
DEFAULT_THRESHOLD = PRM_THRESHOLD
BAD_THRESHOLD = "threshold must be a number between 0 and 1, e.g. threshold=0.5"
UNKNOWN_SOURCE = "No label of {source!r} reaches a rollout of forest {forest!r}."


def threshold_parse(text: str | None) -> float:
    """``?threshold=``: a number in [0, 1] (none: ``DEFAULT_THRESHOLD``, the PRM threshold); ``ApplicationError``
    otherwise. The tree view and the PRM comparison page read it so."""
    if text is None or not text.strip():
        return DEFAULT_THRESHOLD
    try:
        value = float(text)
    except ValueError:
        raise ApplicationError(BAD_THRESHOLD) from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ApplicationError(BAD_THRESHOLD)
    return value


def source_name(option: str) -> str:
    """The canonical name of a source option (``exact``, ``prm:V``, ``labels:S``); ``ApplicationError`` naming the
    accepted forms when it is none of them."""
    option = option.strip()
    if option == EXACT:
        return EXACT
    value_function = value_function_parse(option)
    return EXACT if value_function.kind == LABELLED else str(value_function)


def tree_source_read(*, forest: Forest, root: Node, name: str) -> SourceInput:
    """Source ``name`` (canonical, see ``source_name``) on ``root``'s tree: one query for its labels there (none for
    the exact values), and one more when none reach the tree, to tell a version unknown to the forest
    (``ApplicationError``) from one that has not reached this tree yet."""
    if name == EXACT:
        return SourceInput(name=EXACT)
    value_function = value_function_parse(name)
    rows = list(
        ProcessRewardLabel.objects.filter(prm_version=value_function.version, rollout__node__tree_id=root.pk)
        .order_by("id")
        .values_list("id", "rollout_id", "rollout__node_id", "prm_output")
    )
    if (
        not rows
        and not ProcessRewardLabel.objects.filter(
            prm_version=value_function.version, rollout__forest_id=forest.pk
        ).exists()
    ):
        raise ApplicationError(UNKNOWN_SOURCE.format(source=name, forest=forest.name))
    codes = value_function.kind == "labels"
    labels = [
        (node_id, label_outputs(label_id, value_function.version, output, codes=codes))
        for label_id, _, node_id, output in rows
    ]
    return SourceInput(name=name, labels=labels, labelled_rollouts=len({row[1] for row in rows}))


def tree_source_choices(*, root: Node) -> list[str]:
    """The sources that reach ``root``'s tree, for the page's menus: ``exact``, then each version labelling its
    rollouts (``labels:`` for a labelling scheme's, ``prm:`` for the others), in two queries."""
    versions = sorted(
        set(
            ProcessRewardLabel.objects.filter(rollout__node__tree_id=root.pk)
            .order_by()
            .values_list("prm_version", flat=True)
            .distinct()
        )
    )
    schemes = set(LabellingScheme.objects.filter(prm_version__in=versions).values_list("prm_version", flat=True))
    return [EXACT, *(version_source(v, scheme=v in schemes) for v in versions)]
