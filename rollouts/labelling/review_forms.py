"""The adjudication form of the review page: a rating (-1/0/+1 or none) and a note per step, the finish reason and
the reason for the decision. It validates input only; the label rules live in ``rules``."""

from __future__ import annotations

from django import forms

from rollouts.labelling.forms import FINISH_CHOICES, StepRatingsForm
from rollouts.labelling.review_services import REASON_MAX_CHARS, AdjudicationInput
from rollouts.labelling.services import NOTE_MAX_CHARS


class AdjudicationForm(StepRatingsForm):
    """``rating_<i>`` and ``note_<i>`` per step, ``finish_reason`` and the required ``reason``."""

    finish_reason = forms.ChoiceField(choices=FINISH_CHOICES, required=False)
    reason = forms.CharField(
        max_length=REASON_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why this is the label: kept with it and in its history.",
    )

    def adjudication_input(self) -> AdjudicationInput:
        data = self.cleaned_data
        return AdjudicationInput(
            ratings=[int(data[f"rating_{i}"]) if data.get(f"rating_{i}") else None for i in range(self.steps)],
            notes=[data.get(f"note_{i}") or "" for i in range(self.steps)],
            finish_reason=data.get("finish_reason") or "",
            reason=data.get("reason") or "",
        )

    def shown(self) -> tuple[list[str], list[str], str, str]:
        """What the form holds, as the page shows it back (ratings as "-1"/"0"/"1"/"", notes, finish reason,
        reason), read from the posted data whether or not it is valid."""
        ratings = [
            value if (value := str(self.data.get(f"rating_{i}", ""))) in ("-1", "0", "1") else ""
            for i in range(self.steps)
        ]
        notes = [str(self.data.get(f"note_{i}", ""))[:NOTE_MAX_CHARS] for i in range(self.steps)]
        finish = str(self.data.get("finish_reason", ""))
        return ratings, notes, finish if finish in dict(FINISH_CHOICES) else "", str(self.data.get("reason", ""))
