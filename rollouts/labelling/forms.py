"""Forms of the labelling pages. They validate input only; the rules live in ``rules`` and ``services``."""

from __future__ import annotations

from django import forms

from rollouts.labelling import rules
from rollouts.labelling.consensus import RULE_FIRST_ERROR, RULE_STEPS
from rollouts.labelling.gold import GOLD_MIN_ANSWERS_DEFAULT
from rollouts.labelling.services import NOTE_MAX_CHARS, LabelInput
from rollouts.labelling.stepwise import FORMATS
from rollouts.labelling.visits import VISIT_TOKEN_MAX_CHARS

ACTION_SUBMIT = "submit"
ACTION_SAVE = "save"
ACTION_SKIP = "skip"
ACTION_DISCARD = "discard"
ACTIONS = (ACTION_SUBMIT, ACTION_SAVE, ACTION_SKIP, ACTION_DISCARD)

RATING_CHOICES = [("", "unrated"), ("-1", "\u22121"), ("0", "0"), ("1", "+1")]
# The ratings as the pages show them: the value, its sign and word, and the keys that give it, a symbol saying the
# rating (with the key it shares, "_" and "=") and a one-handed key (a s d). No digit but 0 rates: a digit once rated
# 1 = -1. The page's script reads the keys from the form (``data-rating-keys``), so this is the one list of them.
RATING_WORDS = [
    {"value": "-1", "sign": "\u22121", "word": "wrong", "css": "r-wrong", "keys": ["-", "_", "a"]},
    {"value": "0", "sign": "0", "word": "neutral", "css": "r-neutral", "keys": ["0", "s"]},
    {"value": "1", "sign": "+1", "word": "right", "css": "r-right", "keys": ["+", "=", "d"]},
]
RATING_KEYS = {key: rating["value"] for rating in RATING_WORDS for key in rating["keys"]}
FINISH_CHOICES = [
    ("", "from the ratings"),
    (rules.FINISH_FOUND_ERROR, "found an error"),
    (rules.FINISH_SOLUTION, "solution: every step rated, no error"),
    (rules.FINISH_BAD_PROBLEM, "bad problem"),
    (rules.FINISH_GIVE_UP, "give up"),
]


class StepRatingsForm(forms.Form):
    """A rating (``rating_<i>``: -1/0/+1 or none) and a note (``note_<i>``) per step of a rollout of ``steps`` steps;
    the labelling page's form and the review page's adjudication form are both made of these."""

    def __init__(self, *args, steps: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps = steps
        for index in range(steps):
            self.fields[f"rating_{index}"] = forms.ChoiceField(choices=RATING_CHOICES, required=False)
            self.fields[f"note_{index}"] = forms.CharField(required=False, max_length=NOTE_MAX_CHARS)

    def error_messages(self) -> list[str]:
        """The form's errors as sentences naming the step or field they are about."""
        messages: list[str] = []
        for name, errors in self.errors.items():
            kind, _, index = name.partition("_")
            if kind in ("rating", "note") and index.isdigit():
                where = f"Step {int(index) + 1}, {kind}"
            else:
                where = self.fields[name].label or name.replace("_", " ") if name in self.fields else ""
            messages += [f"{where}: {error}" if where else str(error) for error in errors]
        return messages


class LabelForm(StepRatingsForm):
    """One rollout's ratings (``rating_<i>``), notes (``note_<i>``), flag and finish reason, and what to do with
    them (``action``). ``visit`` is the signed instant the page was shown; ``resume`` marks a save sent when a hidden
    page is shown again."""

    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS], required=False)
    bad_problem = forms.BooleanField(required=False)
    finish_reason = forms.ChoiceField(choices=FINISH_CHOICES, required=False)
    visit = forms.CharField(required=False, max_length=VISIT_TOKEN_MAX_CHARS)
    resume = forms.BooleanField(required=False)

    @property
    def chosen_action(self) -> str:
        return self.cleaned_data.get("action") or ACTION_SUBMIT

    def label_input(self) -> LabelInput:
        data = self.cleaned_data
        return LabelInput(
            ratings=[int(data[f"rating_{i}"]) if data.get(f"rating_{i}") else None for i in range(self.steps)],
            notes=[data.get(f"note_{i}") or "" for i in range(self.steps)],
            bad_problem=bool(data.get("bad_problem")),
            finish_reason=data.get("finish_reason") or "",
        )

    def raw_input(self) -> LabelInput:
        """What was posted, as far as it reads, for showing it back when the form is invalid."""
        ratings: list[int | None] = []
        for index in range(self.steps):
            value = self.data.get(f"rating_{index}", "")
            ratings.append(int(value) if value in ("-1", "0", "1") else None)
        return LabelInput(
            ratings=ratings,
            notes=[str(self.data.get(f"note_{i}", ""))[:NOTE_MAX_CHARS] for i in range(self.steps)],
            bad_problem=self.data.get("bad_problem") in ("on", "true", "1"),
            finish_reason=self.data.get("finish_reason", "")
            if self.data.get("finish_reason") in rules.FINISH_REASONS
            else "",
        )


class ConsensusExportForm(forms.Form):
    """Which sources the consensus set needs to agree, by which rule, and the file format."""

    mc = forms.BooleanField(required=False, label="the forest's Monte-Carlo values")
    versions = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="labels of other versions"
    )
    rule = forms.ChoiceField(
        choices=[
            (RULE_STEPS, "steps: the steps where every source agrees, up to the first where they do not"),
            (RULE_FIRST_ERROR, "first_error: whole rollouts whose sources name the same first wrong step"),
        ],
        initial=RULE_STEPS,
        required=False,
        widget=forms.RadioSelect,
    )
    min_labels = forms.IntegerField(
        required=False, min_value=1, max_value=1000, help_text="Labels of this scheme a rollout needs (default: K)."
    )
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS if f != "hf_disk"], initial="jsonl", required=False)
    # Gold checks (rollouts.labelling.gold): leave out the labels of labellers below a gold step accuracy.
    gold_min_accuracy = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        label="leave out labellers whose gold step accuracy is below",
        help_text="A share, 0 to 1 (empty: keep everyone).",
    )
    gold_min_answers = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=100000,
        label="with at least this many gold answers",
        help_text=f"Default {GOLD_MIN_ANSWERS_DEFAULT}; a labeller with fewer is kept.",
    )
    adjudicated_first = forms.BooleanField(
        required=False,
        label="adjudicated labels first: a rollout with one exports it in place of its labels' consensus",
    )

    def __init__(self, *args, versions: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["versions"].choices = [(v, v) for v in versions]

    def clean(self) -> dict:
        data = super().clean()
        data["rule"] = data.get("rule") or RULE_STEPS
        data["format"] = data.get("format") or "jsonl"
        data["gold_min_answers"] = data.get("gold_min_answers") or GOLD_MIN_ANSWERS_DEFAULT
        return data


class GoldMarkForm(forms.Form):
    """The gold page's "add a gold item": a rollout of the scheme and its expected ratings."""

    rollout_id = forms.IntegerField(min_value=1, label="Rollout id")
    ratings = forms.CharField(
        max_length=20000,
        label="Expected ratings",
        help_text="One per step: -1, 0 or +1, separated by spaces (in stop-at-first-error mode up to the first -1).",
    )
