"""Rollouts posted by workers, the process reward labels given to them, and the checkout lease between the two."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

# Most labellers a scheme may ask for per rollout.
LABELS_PER_ROLLOUT_MAX = 20


class Rollout(models.Model):
    model = models.CharField(max_length=300, help_text="Model identifier the rollout was generated with.")
    example = models.TextField(help_text="The prompt from the dataset.")
    reasoning = models.JSONField(help_text="Step-by-step reasoning: a list of strings.")
    prediction = models.IntegerField(null=True, blank=True, help_text="Predicted class label (null: none parsable).")
    ground_truth = models.IntegerField(
        null=True, blank=True, help_text="Ground-truth class label (null: the rollout's answer kind is not a label)."
    )
    answer = models.TextField(  # noqa: DJ001 (null: none was given, unlike "")
        null=True, blank=True, help_text="The model's final answer as text (for label rollouts, the prediction)."
    )
    correct = models.BooleanField(
        default=False, help_text="The grader's verdict, decided once when the rollout was stored (docs/answers.md)."
    )
    verdict_reason = models.CharField(
        max_length=300, blank=True, help_text="Why the grader said not correct without deciding (empty: it decided)."
    )
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
    idempotency_key = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        unique=True,
        help_text="Key the worker generated for this rollout: posting it again answers this rollout's id.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"rollout #{self.pk} by {self.worker} ({self.model})"

    @property
    def is_correct(self) -> bool:
        """The stored verdict (``correct``): the grader decided it once, when the rollout was stored."""
        return self.correct


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
    labelled_by = models.CharField(
        max_length=200,
        blank=True,
        help_text="User (token or login) that posted the label; empty for labels written by trusted code.",
    )
    attributes = models.JSONField(
        default=dict,
        blank=True,
        help_text="What a labeller recorded beyond the step values (people: finish reason, time spent, flags).",
    )
    final_reward = models.FloatField(
        null=True,
        blank=True,
        help_text="prm_output's last value, kept apart so active learning can rank rollouts by it in SQL.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # A repeated POST of the same label is idempotent. A label is its caller's: the account that posted it
            # (labelled_by) and the worker name it gave, so no caller's worker name can stand for another account.
            models.UniqueConstraint(
                fields=["rollout", "prm_version", "labelled_by", "worker"], name="label_unique_per_caller_worker"
            ),
        ]
        indexes = [
            # "Unlabelled rollouts of a prm_version" is an anti-join on this pair; label ids of a version too.
            models.Index(fields=["prm_version", "rollout"], name="label_version_rollout"),
        ]

    def __str__(self) -> str:
        return f"label #{self.pk} of rollout #{self.rollout_id} ({self.prm_version})"


class RolloutCheckout(models.Model):
    """A lease: the rollout was handed out for ``prm_version`` and is not handed out again before ``expires_at``.

    One row per (rollout, prm_version, slot); an expired row is taken over by the next claim rather than duplicated.
    A version labelled once per rollout uses slot 0 only; a labelling scheme asking for K labellers per rollout uses
    slots 0…K-1, one per labeller holding it.
    """

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="checkouts")
    prm_version = models.CharField(max_length=200)
    slot = models.PositiveSmallIntegerField(default=0, help_text="Which of the version's K labellers holds it.")
    expires_at = models.DateTimeField(help_text="The lease is live until this instant.")
    claimed_by = models.CharField(max_length=200, blank=True, help_text="User the rollout was handed to.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["expires_at"]
        constraints = [
            models.UniqueConstraint(fields=["prm_version", "rollout", "slot"], name="checkout_one_per_rollout_slot"),
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
    inserting a smaller id (see ``rollouts.queue.queue_cursor_advance``).
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


class LabellingScheme(models.Model):
    """How a ``prm_version`` is labelled by people (or AI judges): the instructions they read and how many different
    labellers each rollout gets. A ``prm_version`` without a scheme is labelled once per rollout."""

    prm_version = models.CharField(
        max_length=200, unique=True, help_text="The version its labels are stored under, e.g. human-v1."
    )
    title = models.CharField(max_length=200, help_text="Shown to labellers.")
    instructions = models.TextField(blank=True, help_text="Markdown shown to labellers before and while they label.")
    labels_per_rollout = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(LABELS_PER_ROLLOUT_MAX)],
        help_text="How many different labellers each rollout gets (K); each rollout goes to K people, never twice "
        "to one.",
    )
    stop_at_first_error = models.BooleanField(
        default=False, help_text="A rollout ends at its first step rated -1 (PRM800K's phase 2)."
    )
    active_learning = models.BooleanField(
        default=False, help_text="Hand out first the rollouts where the reference PRM disagrees with the ground truth."
    )
    reference_prm_version = models.CharField(
        max_length=200, blank=True, help_text="PRM version active learning compares with (default: the newest adapter)."
    )
    is_open = models.BooleanField(default=True, help_text="Labellers may claim rollouts of this scheme.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(labels_per_rollout__gte=1)
                & models.Q(labels_per_rollout__lte=LABELS_PER_ROLLOUT_MAX),
                name="scheme_labels_per_rollout_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.prm_version}, {self.labels_per_rollout} per rollout)"


class LabelDraft(models.Model):
    """A person's unfinished label of one rollout for one scheme, kept on the server so that it survives leaving the
    page, another browser and an expired lease. Deleted when the label is stored or the rollout skipped."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="label_drafts")
    prm_version = models.CharField(max_length=200, help_text="The labelling scheme's version.")
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="label_drafts")
    ratings = models.JSONField(default=list, blank=True, help_text="Per step: -1, 0, +1 or null (not rated yet).")
    notes = models.JSONField(default=list, blank=True, help_text="Per step: the labeller's note (may be empty).")
    bad_problem = models.BooleanField(default=False)
    finish_reason = models.CharField(max_length=20, blank=True)
    seconds_spent = models.FloatField(default=0.0, help_text="Time on the labelling page counted so far.")
    counted_until = models.DateTimeField(
        null=True, blank=True, help_text="Time on the page is counted up to this instant (never counted twice)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "prm_version", "rollout"], name="draft_one_per_user_rollout"),
        ]
        indexes = [models.Index(fields=["user", "prm_version"], name="draft_user_version")]
        # Granted to the "labellers" group (created by a migration); staff grant it in the admin.
        permissions = [("label_rollouts", "Can label rollouts on the labelling pages")]

    def __str__(self) -> str:
        return f"draft of rollout #{self.rollout_id} for {self.prm_version} by {self.user_id}"
