"""Rollouts posted by workers, the process reward labels given to them, and the checkout lease between the two."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

# Most labellers a scheme may ask for per rollout.
LABELS_PER_ROLLOUT_MAX = 20
# Highest share of a labeller's rollouts that may be gold checks.
GOLD_RATE_MAX = 0.5

# What a scheme's scope may ask of a rollout's outcome (the stored verdict, docs/answers.md).
OUTCOME_ANY = ""
OUTCOME_CORRECT = "correct"
OUTCOME_WRONG = "wrong"
OUTCOME_NO_ANSWER = "no_answer"
OUTCOME_CHOICES = [
    (OUTCOME_ANY, "any outcome"),
    (OUTCOME_CORRECT, "correct"),
    (OUTCOME_WRONG, "wrong (an answer that is not correct)"),
    (OUTCOME_NO_ANSWER, "no answer"),
]

# Where a gold item's expected ratings came from.
GOLD_FROM_ADJUDICATION = "adjudication"
GOLD_FROM_IMPORT = "imported"
GOLD_FROM_STAFF = "staff"
GOLD_SOURCES = [
    (GOLD_FROM_ADJUDICATION, "an adjudicated label"),
    (GOLD_FROM_IMPORT, "imported"),
    (GOLD_FROM_STAFF, "entered by staff"),
]


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
    # The scope: which rollouts the scheme labels. Empty fields ask nothing, so a scheme with none labels every
    # rollout (the schemes made before scopes existed keep doing so).
    forests = models.ManyToManyField(
        "forests.Forest",
        blank=True,
        related_name="labelling_schemes",
        help_text="Label only the rollouts of these forests (none chosen: every rollout).",
    )
    scope_models = models.JSONField(
        default=list, blank=True, help_text="Label only the rollouts of these models (empty: any model)."
    )
    scope_outcome = models.CharField(
        max_length=20,
        blank=True,
        choices=OUTCOME_CHOICES,
        default=OUTCOME_ANY,
        help_text="Label only the rollouts with this outcome.",
    )
    gold_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(GOLD_RATE_MAX)],
        help_text="Share of the rollouts handed to a labeller that are gold checks (0: none), unmarked to them.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords(m2m_fields=[forests])

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(labels_per_rollout__gte=1)
                & models.Q(labels_per_rollout__lte=LABELS_PER_ROLLOUT_MAX),
                name="scheme_labels_per_rollout_range",
            ),
            models.CheckConstraint(
                condition=models.Q(gold_rate__gte=0.0) & models.Q(gold_rate__lte=GOLD_RATE_MAX),
                name="scheme_gold_rate_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.prm_version}, {self.labels_per_rollout} per rollout)"


class LabelDraft(models.Model):
    """A person's unfinished label of one rollout for one scheme, kept on the server so that it survives leaving the
    page, another browser, an expired lease and a skip. Deleted when the label is stored."""

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


class LabelSkip(models.Model):
    """A person skipped a rollout of a scheme: it goes behind the rest of their queue (their draft of it is kept).
    Deleted when they label it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="label_skips")
    prm_version = models.CharField(max_length=200, help_text="The labelling scheme's version.")
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="label_skips")
    skipped_at = models.DateTimeField(help_text="When they last skipped it: skipped rollouts come back oldest first.")

    class Meta:
        ordering = ["skipped_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "prm_version", "rollout"], name="skip_one_per_user_rollout"),
        ]
        indexes = [models.Index(fields=["user", "prm_version", "skipped_at"], name="skip_user_version_time")]

    def __str__(self) -> str:
        return f"skip of rollout #{self.rollout_id} for {self.prm_version} by {self.user_id}"


class LabelRevision(models.Model):
    """What a label held before its author revised it: one row per revision, oldest first. The label itself always
    holds the latest values."""

    label = models.ForeignKey(ProcessRewardLabel, on_delete=models.CASCADE, related_name="revisions")
    prm_output = models.JSONField(help_text="The label's step codes before this revision.")
    explanations = models.JSONField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    revised_at = models.DateTimeField(help_text="When these values were replaced.")

    class Meta:
        ordering = ["label", "revised_at", "id"]

    def __str__(self) -> str:
        return f"revision of label #{self.label_id} at {self.revised_at:%Y-%m-%d %H:%M:%S}"


class Adjudication(models.Model):
    """Staff's settled label of a rollout of a scheme, where its labellers disagreed: who decided, when and why.
    Kept apart from the labellers' labels; the consensus export may take it first."""

    scheme = models.ForeignKey(LabellingScheme, on_delete=models.CASCADE, related_name="adjudications")
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="adjudications")
    prm_output = models.JSONField(help_text="One label code per step, as a label's (0 wrong, 1 right, 2 neutral).")
    rated_steps = models.PositiveIntegerField(help_text="Steps 0 … rated_steps-1 carry a decision; later ones none.")
    explanations = models.JSONField(null=True, blank=True, help_text="Optional note per step.")
    reason = models.TextField(help_text="Why this is the label: shown on the review page and kept in the history.")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-decided_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["scheme", "rollout"], name="adjudication_one_per_scheme_rollout"),
        ]

    def __str__(self) -> str:
        return f"adjudication of rollout #{self.rollout_id} in {self.scheme_id}"


class GoldItem(models.Model):
    """A rollout of a scheme whose ratings are known: mixed into labellers' queues (unmarked) to check them. Its
    expected ratings are not a label: they never count as data."""

    scheme = models.ForeignKey(LabellingScheme, on_delete=models.CASCADE, related_name="gold_items")
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="gold_items")
    prm_output = models.JSONField(help_text="Expected code per step, as a label's (0 wrong, 1 right, 2 neutral).")
    rated_steps = models.PositiveIntegerField(help_text="Steps 0 … rated_steps-1 are checked; later ones are not.")
    source = models.CharField(max_length=20, choices=GOLD_SOURCES, default=GOLD_FROM_STAFF)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["scheme", "rollout"], name="gold_one_per_scheme_rollout")]

    def __str__(self) -> str:
        return f"gold rollout #{self.rollout_id} in {self.scheme_id}"


class GoldAnswer(models.Model):
    """A gold item handed to one labeller, and what they answered. Each labeller gets each gold item at most once;
    their answer is checked against the gold, never stored as a label."""

    gold = models.ForeignKey(GoldItem, on_delete=models.CASCADE, related_name="answers")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="gold_answers")
    served_at = models.DateTimeField(help_text="When it was handed to them.")
    answered_at = models.DateTimeField(null=True, blank=True, help_text="When they submitted (null: not yet).")
    prm_output = models.JSONField(null=True, blank=True, help_text="Their step codes, as a label's.")
    explanations = models.JSONField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True, help_text="As a person's label's (rated_steps, …).")

    class Meta:
        ordering = ["served_at", "id"]
        constraints = [models.UniqueConstraint(fields=["gold", "user"], name="gold_answer_one_per_user")]
        indexes = [models.Index(fields=["user", "answered_at"], name="gold_answer_user_open")]

    def __str__(self) -> str:
        return f"gold #{self.gold_id} for {self.user_id}"
