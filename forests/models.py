"""A forest is a set of tries, one per dataset item: the root holds the prompt, every other node one reasoning step.

Identical step prefixes are stored once (unique ``(parent, text_sha256)``), so every root-to-leaf path is a distinct
rollout and the share of correct leaves below a node is its exact value (see DESIGN.md).
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.urls import reverse


def text_sha256(text: str) -> str:
    """The key a step is found by among its siblings (a hash, since steps can be longer than an index entry allows)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Forest(models.Model):
    name = models.CharField(max_length=200, unique=True, help_text="Unique name; the forest's pages live under it.")
    config_name = models.CharField(
        max_length=100, blank=True, help_text="Experiment-config module the forest was seeded from."
    )
    dataset_split = models.CharField(max_length=100, blank=True, help_text="Dataset split the roots came from.")
    config_source = models.TextField(blank=True, help_text="Source text of the experiment config at seeding time.")
    config_sha256 = models.CharField(max_length=64, blank=True, help_text="sha256 of config_source.")
    config_git_commit = models.CharField(
        max_length=64, blank=True, help_text="Git commit of the folder the config came from, when it is a repository."
    )
    config_git_dirty = models.BooleanField(
        default=False, help_text="The config's folder had uncommitted changes when the forest was seeded."
    )
    rollout_config = models.JSONField(
        default=dict,
        blank=True,
        help_text="Generation settings a worker needs: template, reasoning_delimiter_pattern, prediction_pattern, …",
    )
    attributes = models.JSONField(default=dict, blank=True, help_text="Free-form metadata.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("forests:detail", kwargs={"forest_name": self.name})


class Node(models.Model):
    forest = models.ForeignKey(Forest, on_delete=models.CASCADE, related_name="nodes")
    tree = models.ForeignKey(
        "self",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Root of this node's tree (the root points at itself), so a whole tree is one indexed query.",
    )
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children", help_text="Null for a root."
    )
    depth = models.PositiveIntegerField(help_text="0 for a root, 1 for a first reasoning step, …")
    text = models.TextField(help_text="The prompt (root) or the text of one reasoning step.")
    text_sha256 = models.CharField(max_length=64, help_text="sha256 of text; siblings are unique by it.")
    is_leaf = models.BooleanField(default=False, help_text="A rollout ends at this node.")
    prediction = models.IntegerField(
        null=True, blank=True, help_text="Prediction parsed from the rollout that ends here (null: none parsable)."
    )
    answer = models.TextField(  # noqa: DJ001 (null: none was given, unlike "")
        null=True, blank=True, help_text="Final answer of the rollouts that end here, as text (leaves; null: none)."
    )
    correct = models.BooleanField(
        null=True,
        blank=True,
        help_text="The grader's verdict on the rollouts that end here, decided when the first was stored (leaves).",
    )
    ground_truth = models.IntegerField(
        null=True, blank=True, help_text="Class label of the dataset item (roots of label forests only)."
    )
    reference_answer = models.TextField(  # noqa: DJ001 (null: none was given, unlike "")
        null=True,
        blank=True,
        help_text="The item's reference answer as text, that rollouts are graded against (roots).",
    )
    serialized_item = models.JSONField(null=True, blank=True, help_text="The dataset item (roots only).")
    attributes = models.JSONField(default=dict, blank=True, help_text="Free-form metadata.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["parent", "text_sha256"], name="node_unique_step_per_parent"),
            models.CheckConstraint(
                condition=(models.Q(parent__isnull=True, depth=0) | models.Q(parent__isnull=False, depth__gt=0)),
                name="node_root_iff_depth_zero",
            ),
            models.CheckConstraint(
                condition=models.Q(parent__isnull=True) | models.Q(ground_truth__isnull=True),
                name="node_ground_truth_only_on_roots",
            ),
            models.CheckConstraint(
                condition=models.Q(parent__isnull=True) | models.Q(reference_answer__isnull=True),
                name="node_reference_answer_only_on_roots",
            ),
        ]
        indexes = [
            # Roots of a forest (forest page) and nodes of a forest by depth.
            models.Index(fields=["forest", "depth"], name="node_forest_depth"),
            # Leaves of a forest (accuracy, values).
            models.Index(fields=["forest", "is_leaf"], name="node_forest_leaf"),
            # Roots of a forest by ground truth: the forest page's filter reads the index alone (depth in it), not each
            # root's row. Partial, so a step's insert (the intake) does not write it.
            models.Index(
                fields=["forest", "depth", "ground_truth"], condition=models.Q(depth=0), name="node_root_truth"
            ),
        ]

    def __str__(self) -> str:
        head = self.text[:60].replace("\n", " ")
        return f"{'root' if self.parent_id is None else 'step'} #{self.pk} (depth {self.depth}): {head}"

    @property
    def is_root(self) -> bool:
        return self.parent_id is None


# --- Growth: what a forest grows next (forests/growth/policies.py decides, the growth package applies) ----------------


class GrowthPlan(models.Model):
    """How a forest is grown (the options of ``forests.growth.policies.GrowthOptions``) and how far planning has got.

    Roots are planned in id order, a batch at a time, as workers claim work: ``root_cursor`` is the largest root id
    planned under ``version``. Replacing the plan bumps ``version`` and plans every tree again.
    """

    forest = models.OneToOneField(Forest, on_delete=models.CASCADE, related_name="growth_plan")
    options = models.JSONField(help_text="GrowthOptions: policy, num_repeats, completions_per_step, caps, …")
    version = models.PositiveIntegerField(default=1, help_text="Bumped when the plan is replaced.")
    root_cursor = models.BigIntegerField(default=0, help_text="Roots with an id up to this one are planned.")
    history = models.JSONField(default=list, blank=True, help_text="Earlier options, with when they were replaced.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"growth plan of {self.forest_id} (v{self.version}): {self.options.get('policy')}"


class ForestTally(models.Model):
    """Running counts of a forest's rollouts as the growth bookkeeping received them (the token cap reads it)."""

    forest = models.OneToOneField(Forest, on_delete=models.CASCADE, primary_key=True, related_name="tally")
    rollouts = models.BigIntegerField(default=0)
    correct = models.BigIntegerField(default=0, help_text="Rollouts the grader found correct.")
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"forest {self.forest_id}: {self.rollouts} rollouts"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TreeTally(models.Model):
    """Running counts of one tree's rollouts and nodes, kept as they arrive (so no request has to count a forest).

    Every rollout's bookkeeping (``forests.growth.bookkeeping``) adds it and the nodes its path created in the same
    statement; a tally created later than its tree's first nodes starts from the tree's true counts."""

    root = models.OneToOneField(Node, on_delete=models.CASCADE, primary_key=True, related_name="tally")
    forest = models.ForeignKey(Forest, on_delete=models.CASCADE, related_name="+")
    rollouts = models.BigIntegerField(default=0)
    nodes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Nodes of the tree, the root included, kept as rollouts add them (null: not counted yet; readers "
        "count the tree's nodes instead).",
    )
    correct = models.BigIntegerField(default=0, help_text="Rollouts the grader found correct.")
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    planned_version = models.PositiveIntegerField(default=0, help_text="Plan version whose repeats were queued.")
    branched_version = models.PositiveIntegerField(
        default=0, help_text="Plan version whose branching stage (mc/omega) was queued for this tree."
    )

    class Meta:
        indexes = [models.Index(fields=["forest"], name="treetally_forest")]

    def __str__(self) -> str:
        return f"tree {self.root_id}: {self.rollouts} rollouts"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TreeWord(models.Model):
    """A word that occurs in a tree (its prompt or any of its steps): the forest page's search index, so the trees
    holding a word are one range of an index however many of their steps hold it.

    Written by the database, not by Django: triggers on ``forests_node`` add the words of every node inserted or
    whose text or tree changes, each word a tree does not hold yet (migration ``0009_tree_words``; words as
    ``prmsite.core.search_words`` reads them on SQLite, as ``to_tsvector('simple', …)`` does on PostgreSQL). No
    uniqueness is enforced: on PostgreSQL two concurrent transactions adding the same new word to a tree may both
    write it, which readers absorb (``DISTINCT``), where a unique key would make concurrent rollout batches wait on
    each other's words. Words are only added: a step deleted by hand leaves its words under its tree until the forest
    is deleted (a search may then still list that tree), and a deleted tree's words match no root."""

    forest = models.ForeignKey(Forest, on_delete=models.CASCADE, related_name="+", db_index=False)
    word = models.CharField(max_length=64)
    tree = models.ForeignKey(
        Node, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+", help_text="The root."
    )

    class Meta:
        indexes = [models.Index(fields=["forest", "word", "tree"], name="treeword_forest_word_tree")]

    def __str__(self) -> str:
        return f"{self.word!r} in tree {self.tree_id}"


class Expansion(models.Model):
    """Pending work: ``count`` more rollouts that continue from ``node`` (its path from the root is ``path``).

    The queue of a forest is its rows with ``available_at <= now``, oldest first (index ``expansion_queue``), so a
    claim reads only the rows it hands out, whatever the size of the forest. A claim leases a row by moving
    ``available_at`` to the lease's end; a rollout answering it lowers ``count`` and the row is deleted at 0; a row
    handed out ``GROWTH_MAX_ATTEMPTS`` times without being answered is given up (``available_at`` far in the future).
    """

    STAGES = [("repeats", "repeats"), ("mc", "mc"), ("omega", "omega"), ("adaptive", "adaptive")]

    forest = models.ForeignKey(Forest, on_delete=models.CASCADE, related_name="+")
    tree = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+", help_text="Continue from here.")
    path = models.JSONField(help_text="Node ids from the root down to node.")
    stage = models.CharField(max_length=10, choices=STAGES)
    count = models.PositiveIntegerField(help_text="Rollouts still wanted.")
    search = models.ForeignKey(
        "ErrorSearch", on_delete=models.CASCADE, null=True, blank=True, related_name="+", help_text="omega only."
    )
    plan_version = models.PositiveIntegerField()
    available_at = models.DateTimeField(help_text="Claimable from this instant (the end of the current lease).")
    leased_by = models.CharField(max_length=150, blank=True, help_text="User the last lease went to.")
    attempts = models.PositiveIntegerField(default=0, help_text="Leases handed out so far.")
    last_error = models.TextField(blank=True, help_text="What the last worker that gave it back reported.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["available_at", "id"]
        constraints = [models.CheckConstraint(condition=models.Q(count__gte=1), name="expansion_count_positive")]
        indexes = [
            models.Index(fields=["forest", "available_at", "id"], name="expansion_queue"),
            models.Index(fields=["tree"], name="expansion_tree"),
        ]

    def __str__(self) -> str:
        return f"{self.stage} x{self.count} from node {self.node_id}"


class ErrorSearch(models.Model):
    """OmegaPRM's binary search for the first wrong step of one wrong rollout (see
    ``forests.growth.policies.OmegaSearch``)."""

    STATUSES = [("searching", "searching"), ("found", "found"), ("none", "none"), ("capped", "capped")]

    forest = models.ForeignKey(Forest, on_delete=models.CASCADE, related_name="+")
    tree = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    leaf = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+", help_text="Where the wrong path ends.")
    plan_version = models.PositiveIntegerField()
    state = models.JSONField(help_text="OmegaSearch: path, lo, hi, probe, done, first_error.")
    status = models.CharField(max_length=10, choices=STATUSES, default="searching")
    probe_wanted = models.PositiveIntegerField(default=0, help_text="Completions the current probe asks for.")
    probe_received = models.PositiveIntegerField(default=0)
    probe_correct = models.PositiveIntegerField(default=0)
    first_error = models.ForeignKey(
        Node, on_delete=models.CASCADE, null=True, blank=True, related_name="+", help_text="The first wrong step."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["forest", "status"], name="errorsearch_forest_status")]

    def __str__(self) -> str:
        return f"search of leaf {self.leaf_id}: {self.status}"


class RolloutGrowth(models.Model):
    """A forest rollout as the growth bookkeeping counted it (once: a repeated post of the same rollout is not).

    Keeps what the rollout cost and which expansion it answered (expansions are deleted once answered).
    """

    rollout = models.OneToOneField(
        "rollouts.Rollout", on_delete=models.CASCADE, primary_key=True, related_name="growth"
    )
    forest = models.ForeignKey(Forest, on_delete=models.CASCADE, related_name="+")
    tree = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    expansion_id = models.BigIntegerField(null=True, blank=True, help_text="The expansion it answered, if any.")
    stage = models.CharField(max_length=10, blank=True, help_text="Stage of that expansion ('' when none).")
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["forest", "stage"], name="rolloutgrowth_forest_stage")]

    def __str__(self) -> str:
        return f"rollout {self.rollout_id} ({self.stage or 'no expansion'})"


class SearchReport(models.Model):
    """One computed search report of a forest (beam search for each N and the baselines, ``forests.metrics.search``):
    every report is kept, so value functions can be compared on one plot. Its plot is drawn when it is saved."""

    forest = models.ForeignKey(Forest, on_delete=models.CASCADE, related_name="search_reports")
    value_function = models.CharField(max_length=300, help_text="The value function, as parsed: exact, prm:V, ….")
    aggregation = models.CharField(max_length=20, help_text="How step values make a path's score (min, last, …).")
    num_beam_values = models.JSONField(help_text="The beam sizes N searched, ascending.")
    results = models.JSONField(help_text="The report as ``SearchReport.to_dict`` writes it.")
    forest_rollouts = models.BigIntegerField(default=0, help_text="Rollouts in the forest when it was computed.")
    forest_trees = models.BigIntegerField(default=0, help_text="Trees in the forest when it was computed.")
    forest_nodes = models.BigIntegerField(default=0, help_text="Nodes in the forest when it was computed.")
    covered_rollouts = models.BigIntegerField(
        null=True, blank=True, help_text="Rollouts the value source scores (null: every one, exact values)."
    )
    covered_trees = models.BigIntegerField(
        null=True, blank=True, help_text="Trees with a rollout the value source scores (null: every one)."
    )
    plot_svg = models.TextField(blank=True, help_text="The report's plot, drawn when it was saved (SVG).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["forest", "-created_at"], name="search_report_forest_time")]

    def __str__(self) -> str:
        return f"{self.value_function} ({self.aggregation}) on {self.forest_id} at {self.created_at:%Y-%m-%d %H:%M}"
