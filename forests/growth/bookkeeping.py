"""Growth bookkeeping of arriving rollouts: tallies, the expansion a rollout answers, branching and omega searches.

Design note
-----------
- **Bookkeeping as rollouts arrive.** Every rollout posted into a forest (``forests.intake``) updates its tree's and
  forest's tallies (``TreeTally``, ``ForestTally``), answers its expansion (``count`` down; deleted at 0) and, when its
  tree reaches ``num_repeats`` rollouts, queues the tree's branching stage (mc or omega) from a snapshot of that one
  tree. An omega probe's answers move its search (``ErrorSearch``) and queue the next probe. In a tree branched
  under the ``adaptive`` policy every arrival decides the tree's steps again (``forests.growth.plan.adaptive_round``):
  what is asked of a step decided meanwhile is dropped, and a step whose round is all answered gets its next one.
  A ``RolloutGrowth`` row per rollout makes all of this happen once per rollout, even when the same rollout is
  posted twice.
- **Who answers.** An answer counts against its expansion only when the caller holds it and it still asks for
  answers: the statement that counts it down names the holder and the count it expects, so of concurrent answers at
  most ``count`` pass. Any other answer — a lease that expired and went to another worker, an expansion answered in
  full, dropped by a replaced plan or a decided probe, an id that names nothing — is still a good rollout of its tree:
  it is stored and tallied like a rollout posted without ``expansion_id``, and counts against no expansion. Nothing a
  worker generated is lost, and nobody can use up another worker's expansion.
- **Locks (PostgreSQL).** An arrival takes, in this order: its expansion row, its tree tally, its search, the forest
  tally (last, briefly); an answer to an ``adaptive`` expansion takes its tree tally before its expansion row, since
  the adaptive decider deletes expansions of its tree while holding the tally. Nobody waits for the plan row while
  holding a tally, so there is no cycle with planning. On SQLite every write transaction holds the database lock
  from its start (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from forests.growth.plan import adaptive_round, search_save, tree_branch
from forests.growth.policies import STAGE_ADAPTIVE, STAGE_OMEGA, tree_budget
from forests.growth.selectors import forest_true_counts, growth_options_of, tree_queued, tree_true_counts
from forests.models import ErrorSearch, Expansion, ForestTally, GrowthPlan, Node, RolloutGrowth, TreeTally, text_sha256
from prmsite.core.errors import UnprocessableError
from prmsite.core.growth import OmegaSearch, omega_record
from rollouts.models import Rollout

EXPANSION_NOT_IN_FOREST = "Expansion {expansion_id} belongs to another forest than {name!r}."
EXPANSION_OFF_PATH = (
    "The rollout does not pass through node {node_id} that expansion {expansion_id} continues from: send the "
    "expansion's prefix steps unchanged as the first reasoning steps."
)


def _usage(attributes: Mapping[str, Any] | None) -> tuple[int, int]:
    usage = (attributes or {}).get("usage")
    if not isinstance(usage, Mapping):
        return 0, 0

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    return count("prompt_tokens"), count("completion_tokens")


def rollout_account(
    *, rollout: Rollout, expansion_id: int | None, answered_by: str | None = None, nodes_added: int = 0
) -> None:
    """Count ``rollout`` (stored, linked to its leaf) into its tree's and forest's tallies, with the ``nodes_added``
    nodes its path created (see the design note)."""
    leaf = rollout.node
    forest_id = rollout.forest_id
    root_id = leaf.tree_id or leaf.pk
    expansion = None
    if expansion_id is not None:
        expansion = _expansion_held(
            expansion_id=expansion_id, rollout=rollout, root_id=root_id, answered_by=answered_by
        )
    prompt_tokens, completion_tokens = _usage(rollout.attributes)
    try:
        with transaction.atomic():
            growth = RolloutGrowth.objects.create(
                rollout=rollout,
                forest_id=forest_id,
                tree_id=root_id,
                expansion_id=expansion.pk if expansion is not None else None,
                stage=expansion.stage if expansion is not None else "",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
    except IntegrityError:
        return  # this rollout was counted when it was first posted
    # First of the rows an arrival locks (see the design note). An expansion whose count was used up since it was
    # read leaves the rollout unplanned, like any other answer that is not the caller's to count.
    if expansion is not None and expansion.stage == STAGE_ADAPTIVE and connection.features.has_select_for_update:
        # An adaptive answer takes its tree's tally before its expansion: whoever holds the tally and decides the
        # tree's next rounds sees this answer either counted in full (rollout and count) or still asked for, never
        # half, so no step is asked for more than max_completions_per_step; and the decider, deleting the expansions
        # of steps decided meanwhile, never waits for an answer that waits for it (see the design note).
        list(TreeTally.objects.select_for_update().filter(root_id=root_id).values_list("pk", flat=True))
    if expansion is not None and not _expansion_count_down(expansion=expansion, answered_by=answered_by):
        RolloutGrowth.objects.filter(pk=growth.pk).update(expansion_id=None, stage="")
        expansion = None
    correct = rollout.correct  # the grader's verdict, stored by the intake
    now = timezone.now()
    tally = _tree_tally_add(
        forest_id=forest_id,
        root_id=root_id,
        correct=correct,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        nodes=nodes_added,
    )
    plan = GrowthPlan.objects.filter(forest_id=forest_id).first()
    if expansion is not None:
        _expansion_answer(expansion=expansion, plan=plan, correct=correct, now=now)
    if plan is not None:
        options = growth_options_of(plan)
        if (
            options.branches
            and tally.planned_version == plan.version
            and tally.branched_version != plan.version
            and tally.rollouts >= max(1, options.num_repeats)
        ):
            tree_branch(forest_id=forest_id, plan=plan, options=options, tally=tally, now=now)
        elif options.policy == STAGE_ADAPTIVE and tally.branched_version == plan.version:
            # The tree's evidence changed: decide its steps again (its tally row is held: one arrival at a time).
            adaptive_round(forest_id=forest_id, plan=plan, options=options, root_id=root_id, now=now)
    _forest_tally_add(
        forest_id=forest_id, correct=correct, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


def rollouts_account_many(
    *, rollouts: Sequence[Rollout], root_ids: Sequence[int], nodes_added: Mapping[int, int] | None = None
) -> None:
    """``rollout_account`` for many rollouts of one forest (``root_ids``: the tree of each; ``nodes_added``: root id
    -> nodes their paths created) that answer no expansion (a bulk import), as if they arrived at once: a
    ``RolloutGrowth`` row each (one statement), each tree's tally counted up once by its rollouts and nodes, the
    tree's branching stage queued when that makes it due, the forest's tally counted up once. A rollout counted
    before (it has its ``RolloutGrowth`` row) is not counted again."""
    if not rollouts:
        return
    forest_id = rollouts[0].forest_id
    counted = set(
        RolloutGrowth.objects.filter(rollout_id__in=[r.pk for r in rollouts]).values_list("rollout_id", flat=True)
    )
    rows: dict[int, RolloutGrowth] = {}
    per_tree: dict[int, list[int]] = {}  # root id -> [rollouts, correct, prompt tokens, completion tokens]
    for rollout, root_id in zip(rollouts, root_ids, strict=True):
        if rollout.pk in counted or rollout.pk in rows:
            continue
        prompt_tokens, completion_tokens = _usage(rollout.attributes)
        rows[rollout.pk] = RolloutGrowth(
            rollout=rollout,
            forest_id=forest_id,
            tree_id=root_id,
            expansion_id=None,
            stage="",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        tally = per_tree.setdefault(root_id, [0, 0, 0, 0])
        for position, value in enumerate((1, int(rollout.correct), prompt_tokens, completion_tokens)):
            tally[position] += value
    if not rows:
        return
    RolloutGrowth.objects.bulk_create(list(rows.values()))
    now = timezone.now()
    plan = GrowthPlan.objects.filter(forest_id=forest_id).first()
    options = growth_options_of(plan) if plan is not None else None
    for root_id in sorted(per_tree):  # in id order, as planning locks tallies
        added, correct, prompt_tokens, completion_tokens = per_tree[root_id]
        tally = _tree_tally_add(
            forest_id=forest_id,
            root_id=root_id,
            correct=correct,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            rollouts=added,
            nodes=(nodes_added or {}).get(root_id, 0),
        )
        if (
            plan is not None
            and options.branches
            and tally.planned_version == plan.version
            and tally.branched_version != plan.version
            and tally.rollouts >= max(1, options.num_repeats)
        ):
            tree_branch(forest_id=forest_id, plan=plan, options=options, tally=tally, now=now)
        elif plan is not None and options.policy == STAGE_ADAPTIVE and tally.branched_version == plan.version:
            adaptive_round(forest_id=forest_id, plan=plan, options=options, root_id=root_id, now=now)
    totals = [sum(values[position] for values in per_tree.values()) for position in range(4)]
    _forest_tally_add(
        forest_id=forest_id,
        rollouts=totals[0],
        correct=totals[1],
        prompt_tokens=totals[2],
        completion_tokens=totals[3],
    )


def _expansion_held(*, expansion_id: int, rollout: Rollout, root_id: int, answered_by: str | None) -> Expansion | None:
    """The expansion ``rollout`` answers when it counts against it: the expansion exists and is held by
    ``answered_by`` (``None``: any holder, for trusted callers); ``None`` otherwise (see the design note). An
    expansion of another forest, or one the rollout does not pass through, is an ``UnprocessableError``: such an
    answer is malformed, not late. Reads only: the count is taken by ``_expansion_count_down``."""
    expansion = Expansion.objects.filter(pk=expansion_id).first()
    if expansion is None:
        return None
    if expansion.forest_id != rollout.forest_id:
        raise UnprocessableError(EXPANSION_NOT_IN_FOREST.format(expansion_id=expansion_id, name=rollout.forest.name))
    if not _passes_through(rollout, expansion, root_id=root_id):
        raise UnprocessableError(EXPANSION_OFF_PATH.format(node_id=expansion.node_id, expansion_id=expansion_id))
    if answered_by is not None and expansion.leased_by != answered_by:
        return None
    return expansion


def _expansion_count_down(*, expansion: Expansion, answered_by: str | None) -> bool:
    """Take one answer off ``expansion``'s count, deleting it with its last one; answer whether this answer counted
    (False when none is left, or it changed hands since it was read).

    The statements decide, not what was read before them: each names the count it expects, so of concurrent answers
    at most ``count`` find a row to change (PostgreSQL re-checks the condition on the latest row version after
    waiting for a concurrent answer's lock; SQLite runs one write transaction at a time).
    """
    rows = Expansion.objects.filter(pk=expansion.pk)
    if answered_by is not None:
        rows = rows.filter(leased_by=answered_by)
    if rows.filter(count__gt=1).update(count=F("count") - 1):
        return True
    deleted, _ = rows.filter(count=1).delete()
    return bool(deleted)


def _passes_through(rollout: Rollout, expansion: Expansion, *, root_id: int) -> bool:
    """Whether the rollout's path goes through the expansion's node: same tree, and its first steps are the
    expansion's prefix (the trie is keyed by step text, so equal texts are the same nodes)."""
    if expansion.tree_id != root_id:
        return False
    prefix_ids = list(expansion.path[1:])
    if len(rollout.reasoning) < len(prefix_ids):
        return False
    digests = dict(Node.objects.filter(pk__in=prefix_ids).values_list("id", "text_sha256"))
    return all(
        digests.get(node_id) == text_sha256(step) for node_id, step in zip(prefix_ids, rollout.reasoning, strict=False)
    )


_TREE_TALLY_ADD = (
    "UPDATE {table} SET rollouts = rollouts + %s, correct = correct + %s, prompt_tokens = prompt_tokens + %s, "
    "completion_tokens = completion_tokens + %s, nodes = nodes + %s WHERE root_id = %s "
    "RETURNING rollouts, correct, planned_version, branched_version, nodes"
)
_TREE_TALLY_INSERT = (
    "INSERT INTO {table} (root_id, forest_id, rollouts, correct, prompt_tokens, completion_tokens, nodes, "
    "planned_version, branched_version) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 0) ON CONFLICT (root_id) DO UPDATE SET "
    "rollouts = {table}.rollouts + %s, correct = {table}.correct + %s, "
    "prompt_tokens = {table}.prompt_tokens + %s, completion_tokens = {table}.completion_tokens + %s, "
    "nodes = {table}.nodes + %s "
    "RETURNING rollouts, correct, planned_version, branched_version, nodes"
)


def _tree_tally_add(
    *,
    forest_id: int,
    root_id: int,
    correct: int,
    prompt_tokens: int,
    completion_tokens: int,
    rollouts: int = 1,
    nodes: int = 0,
) -> TreeTally:
    """Count ``rollouts`` rollouts (``correct`` of them correct) and the ``nodes`` nodes their paths created (in this
    transaction) into their tree's tally (created from the tree's rollouts and nodes, these included, if missing; its
    node count taken from the tree when it had none); answer the tally as it is now. Holds the tally row until the
    transaction ends."""
    table = connection.ops.quote_name(TreeTally._meta.db_table)
    added = [rollouts, int(correct), prompt_tokens, completion_tokens, nodes]
    with connection.cursor() as cursor:
        cursor.execute(_TREE_TALLY_ADD.format(table=table), [*added, root_id])
        row = cursor.fetchone()
        if row is None:
            # Not counted before: start from the tree's rollouts and nodes, which include these. A concurrent first
            # arrival may insert meanwhile; then these are added to its count (which could not see them).
            true_rollouts, correct_n = tree_true_counts(root_ids=[root_id])[root_id]
            true_nodes = Node.objects.filter(tree_id=root_id).count()
            inserted = [root_id, forest_id, true_rollouts, correct_n, prompt_tokens, completion_tokens, true_nodes]
            cursor.execute(_TREE_TALLY_INSERT.format(table=table), [*inserted, *added])
            row = cursor.fetchone()
        counted, correct_n, planned, branched, counted_nodes = row
        if counted_nodes is None:
            # A tally made without a node count (before migration 0007, or by planning): count the tree's nodes
            # once, these included; the row is locked, so later arrivals add to this count.
            counted_nodes = Node.objects.filter(tree_id=root_id).count()
            TreeTally.objects.filter(root_id=root_id).update(nodes=counted_nodes)
    return TreeTally(
        root_id=root_id,
        forest_id=forest_id,
        rollouts=counted,
        correct=correct_n,
        nodes=counted_nodes,
        planned_version=planned,
        branched_version=branched,
    )


_FOREST_TALLY_INSERT = (
    "INSERT INTO {table} (forest_id, rollouts, correct, prompt_tokens, completion_tokens) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (forest_id) DO UPDATE SET rollouts = {table}.rollouts + %s, correct = {table}.correct + %s, "
    "prompt_tokens = {table}.prompt_tokens + %s, completion_tokens = {table}.completion_tokens + %s"
)


def _forest_tally_add(
    *, forest_id: int, correct: int, prompt_tokens: int, completion_tokens: int, rollouts: int = 1
) -> None:
    """Count ``rollouts`` rollouts (``correct`` of them correct) into their forest's tally (created from the forest's
    rollouts, these included, if missing)."""
    updated = ForestTally.objects.filter(forest_id=forest_id).update(
        rollouts=F("rollouts") + rollouts,
        correct=F("correct") + int(correct),
        prompt_tokens=F("prompt_tokens") + prompt_tokens,
        completion_tokens=F("completion_tokens") + completion_tokens,
    )
    if updated:
        return
    true_rollouts, correct_n = forest_true_counts(forest_id=forest_id)
    table = connection.ops.quote_name(ForestTally._meta.db_table)
    with connection.cursor() as cursor:
        inserted = [forest_id, true_rollouts, correct_n, prompt_tokens, completion_tokens]
        added = [rollouts, int(correct), prompt_tokens, completion_tokens]
        cursor.execute(_FOREST_TALLY_INSERT.format(table=table), [*inserted, *added])


def _expansion_answer(*, expansion: Expansion, plan: GrowthPlan | None, correct: bool, now: datetime) -> None:
    """One more rollout answered ``expansion`` (counted down already): move its omega search."""
    if expansion.stage != STAGE_OMEGA or expansion.search_id is None or plan is None:
        return
    search_row = ErrorSearch.objects.select_for_update().filter(pk=expansion.search_id).first()
    if search_row is None or search_row.status != "searching" or search_row.plan_version != plan.version:
        return
    search = OmegaSearch(**search_row.state)
    if search.probe is None or search.path[search.probe] != expansion.node_id:
        return  # an answer to an earlier probe of this search, arriving late: it is in the tallies, nothing more
    search_row.probe_received += 1
    search_row.probe_correct += int(correct)
    positive = search_row.probe_correct > 0
    if not positive and search_row.probe_received < search_row.probe_wanted:
        search_row.save(update_fields=["probe_received", "probe_correct", "updated_at"])
        return
    # The probe is decided (a correct completion ends it early): drop what it still asks for, queue the next one.
    # Answers in flight to what is dropped are stored as unplanned rollouts of the tree (see the design note).
    Expansion.objects.filter(search_id=search_row.pk, node_id=expansion.node_id).delete()
    options = growth_options_of(plan)
    search = omega_record(search, positive=positive)
    tally = TreeTally.objects.filter(root_id=search_row.tree_id).values_list("rollouts", flat=True).first() or 0
    budget = tree_budget(options=options, rollouts=tally, queued=tree_queued(root_id=search_row.tree_id))
    search_save(
        forest_id=search_row.forest_id,
        root_id=search_row.tree_id,
        leaf_id=search_row.leaf_id,
        search=search,
        plan=plan,
        options=options,
        budget=budget,
        now=now,
        row=search_row,
    )
