"""A forest is a set of tries, one per dataset item: the root holds the prompt, every other node one reasoning step.

Identical step prefixes are stored once (unique ``(parent, text_sha256)``), so every root-to-leaf path is a distinct
rollout and the share of correct leaves below a node is its exact value (see DESIGN.md).
"""

from __future__ import annotations

import hashlib

from django.db import models


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
        from django.urls import reverse

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
    ground_truth = models.IntegerField(null=True, blank=True, help_text="Label of the dataset item (roots only).")
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
        ]
        indexes = [
            # Roots of a forest (forest page) and nodes of a forest by depth.
            models.Index(fields=["forest", "depth"], name="node_forest_depth"),
            # Leaves of a forest (accuracy, values).
            models.Index(fields=["forest", "is_leaf"], name="node_forest_leaf"),
        ]

    def __str__(self) -> str:
        head = self.text[:60].replace("\n", " ")
        return f"{'root' if self.parent_id is None else 'step'} #{self.pk} (depth {self.depth}): {head}"

    @property
    def is_root(self) -> bool:
        return self.parent_id is None
