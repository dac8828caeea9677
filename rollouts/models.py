"""Rollouts posted by workers, the process reward labels given to them, and the checkout lease between the two."""

from __future__ import annotations

from django.db import models

from prmsite.domain import rollout_is_correct


class Rollout(models.Model):
    model = models.CharField(max_length=300, help_text="Model identifier the rollout was generated with.")
    example = models.TextField(help_text="The prompt from the dataset.")
    reasoning = models.JSONField(help_text="Step-by-step reasoning: a list of strings.")
    prediction = models.IntegerField(null=True, blank=True, help_text="Predicted class label (null: none parsable).")
    ground_truth = models.IntegerField(help_text="Ground-truth class label.")
    worker = models.CharField(max_length=200, help_text="Worker identifier, as the worker gave it.")
    forest = models.ForeignKey(
        "forests.Forest",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rollouts",
        help_text="Forest the rollout was inserted into, if any.",
    )
    node = models.ForeignKey(
        "forests.Node",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rollouts",
        help_text="Leaf of the forest where this rollout ends.",
    )
    attributes = models.JSONField(default=dict, blank=True, help_text="Extra fields posted with the rollout.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"rollout #{self.pk} by {self.worker} ({self.model})"

    @property
    def is_correct(self) -> bool:
        return rollout_is_correct(self.prediction, self.ground_truth)


class ProcessRewardLabel(models.Model):
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="labels")
    prm_version = models.CharField(
        max_length=200, help_text="PRM version, or labelling-scheme version for an AI labeller."
    )
    prm_output = models.JSONField(
        help_text="One reward per reasoning step: floats from a PRM; 0/1/2 (not preferred/preferred/neutral) from a "
        "labeller."
    )
    explanations = models.JSONField(null=True, blank=True, help_text="Optional list of strings, one per step.")
    worker = models.CharField(max_length=200, help_text="Worker identifier, as the worker gave it.")
    final_reward = models.FloatField(
        null=True,
        blank=True,
        help_text="prm_output's last value, kept apart so active learning can rank rollouts by it in SQL.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # A repeated POST of the same label is idempotent.
            models.UniqueConstraint(fields=["rollout", "prm_version", "worker"], name="label_unique_per_worker"),
        ]
        indexes = [
            # "Unlabelled rollouts of a prm_version" is an anti-join on this pair; label ids of a version too.
            models.Index(fields=["prm_version", "rollout"], name="label_version_rollout"),
        ]

    def __str__(self) -> str:
        return f"label #{self.pk} of rollout #{self.rollout_id} ({self.prm_version})"


class RolloutCheckout(models.Model):
    """A lease: the rollout was handed out for ``prm_version`` and is not handed out again before ``expires_at``.

    One row per (rollout, prm_version); an expired row is taken over by the next claim rather than duplicated.
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="checkouts")
    prm_version = models.CharField(max_length=200)
    expires_at = models.DateTimeField(help_text="The lease is live until this instant.")
    claimed_by = models.CharField(max_length=200, blank=True, help_text="User the rollout was handed to.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["expires_at"]
        constraints = [
            models.UniqueConstraint(fields=["prm_version", "rollout"], name="checkout_one_per_rollout_version"),
        ]
        indexes = [models.Index(fields=["prm_version", "expires_at"], name="checkout_version_expiry")]

    def __str__(self) -> str:
        return (
            f"checkout of rollout #{self.rollout_id} for {self.prm_version} until {self.expires_at:%Y-%m-%d %H:%M:%S}"
        )


class RolloutQueueCursor(models.Model):
    """How far the queue of one prm_version is done: every rollout with a smaller id has a label for it.

    Claims start their scan here instead of at the first rollout, so a claim costs the same after a million labels as
    after ten. It only moves forward past rollouts that are labelled and old enough that no transaction can still be
    inserting a smaller id (see ``rollouts.services.queue_cursor_advance``).
    """

    prm_version = models.CharField(max_length=200, unique=True)
    labelled_below = models.BigIntegerField(
        default=0, help_text="Every rollout with an id below this has a label for prm_version."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["prm_version"]

    def __str__(self) -> str:
        return f"{self.prm_version}: labelled below #{self.labelled_below}"
