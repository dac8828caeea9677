"""Staff invite a labeller in one step; the labeller sets a password through a one-time link.

``/label/invite/`` (staff who may add users): a user name, optionally an email and a name. The account is made with
no usable password and put in the "labellers" group, and the page shows a link to
``/label/welcome/<uidb64>/<token>/``, which staff send to the labeller. There the labeller chooses a password (checked
by the project's password validators) and is logged in to ``/label/``.

The link's token is Django's password-reset token under a salt of its own (a password-reset token is no invitation,
and an invitation no password reset). It holds the password's hash, so it works until the password is set (once),
and the instant it was made, so it works for ``LABELLER_INVITE_TIMEOUT_S`` seconds. It is only accepted for an active
account that has no usable password yet, that is an invited one. As Django's own reset view does, the page moves
the token into the session and drops it from the address before asking for the password, so it leaks in no Referer.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.contrib.auth.views import INTERNAL_RESET_SESSION_TOKEN, PasswordResetConfirmView
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse, reverse_lazy
from django.utils.crypto import constant_time_compare
from django.utils.encoding import force_bytes
from django.utils.http import base36_to_int, urlsafe_base64_encode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from rollouts.labelling.access import forbidden, staff_required

# The group the migrations create (rollouts/migrations/0007_labellers_group.py); it holds rollouts.label_rollouts.
LABELLERS_GROUP = "labellers"
# Staff may invite when they may add users (superusers may).
INVITE_PERMISSION = "auth.add_user"

USERNAME_TAKEN = "A user named {username!r} exists already: choose another user name."
NO_GROUP = 'The group "labellers" does not exist: run the migrations (python manage.py migrate) first.'
INVITED = "{username} is invited: send them the link below. It works once and for {days} days."
LINK_EXPIRED = "This invitation link has expired: ask staff for a new invitation."
LINK_INVALID = (
    "This invitation link is not valid: it has been used already (log in with your password), "
    "or it is incomplete (copy the whole link), or staff made a new one."
)
WELCOME = "Welcome, {username}: your password is set and you are logged in."

# What an invitation link is (InviteTokenGenerator.token_state).
STATE_VALID = "valid"
STATE_EXPIRED = "expired"
STATE_WRONG = "wrong"


def invitable(user) -> bool:
    """An account whose invitation link may set its password: active, with no usable password yet."""
    return user is not None and user.is_active and not user.has_usable_password()


class InviteTokenGenerator(PasswordResetTokenGenerator):
    """Django's reset tokens, salted apart, expiring after ``LABELLER_INVITE_TIMEOUT_S`` and telling an expired token
    from a wrong one."""

    key_salt = "rollouts.labelling.invite.InviteTokenGenerator"

    def token_state(self, user, token: str | None) -> str:
        if not invitable(user) or not token:
            return STATE_WRONG
        ts_b36, _, _ = token.partition("-")
        try:
            ts = base36_to_int(ts_b36)
        except ValueError:
            return STATE_WRONG
        if not any(
            constant_time_compare(self._make_token_with_timestamp(user, ts, secret), token)
            for secret in [self.secret, *self.secret_fallbacks]
        ):
            return STATE_WRONG
        if self._num_seconds(self._now()) - ts > settings.LABELLER_INVITE_TIMEOUT_S:
            return STATE_EXPIRED
        return STATE_VALID

    def check_token(self, user, token) -> bool:
        return self.token_state(user, token) == STATE_VALID


invite_tokens = InviteTokenGenerator()


def welcome_path(user) -> str:
    """The path of the user's invitation link (valid from now)."""
    return reverse(
        "labelling:welcome",
        kwargs={"uidb64": urlsafe_base64_encode(force_bytes(user.pk)), "token": invite_tokens.make_token(user)},
    )


def _user_field(name: str):
    return get_user_model()._meta.get_field(name)


class InviteForm(forms.Form):
    username = forms.CharField(
        max_length=_user_field("username").max_length,
        validators=[UnicodeUsernameValidator()],
        help_text="What they log in with: letters, digits and @ . + - _ only.",
    )
    email = forms.EmailField(required=False, max_length=_user_field("email").max_length)
    first_name = forms.CharField(required=False, max_length=_user_field("first_name").max_length)
    last_name = forms.CharField(required=False, max_length=_user_field("last_name").max_length)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model()._default_manager.filter(username__iexact=username).exists():
            raise forms.ValidationError(USERNAME_TAKEN.format(username=username))
        return username


class InviteRefused(Exception):
    """The invitation could not be made; ``str()`` says why, in one line for staff."""


def labeller_invite(*, username: str, email: str = "", first_name: str = "", last_name: str = ""):
    """Make the account (no usable password), put it in the labellers group; all or nothing."""
    group = Group.objects.filter(name=LABELLERS_GROUP).first()
    if group is None:
        raise InviteRefused(NO_GROUP)
    user_model = get_user_model()
    try:
        with transaction.atomic():
            if user_model._default_manager.filter(username__iexact=username).exists():
                raise InviteRefused(USERNAME_TAKEN.format(username=username))
            user = user_model._default_manager.create_user(
                username=username, email=email, password=None, first_name=first_name, last_name=last_name
            )
            user.groups.add(group)
    except IntegrityError as exc:  # the same name, invited at the same instant by someone else
        raise InviteRefused(USERNAME_TAKEN.format(username=username)) from exc
    return user


@never_cache
@require_http_methods(["GET", "POST"])
@staff_required
def invite(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(INVITE_PERMISSION):
        return forbidden(request, staff=True)
    context: dict = {"days": f"{settings.LABELLER_INVITE_TIMEOUT_S / 86400:g}"}
    if request.method == "GET":
        return render(request, "rollouts/labelling/invite.html", {**context, "form": InviteForm()})
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            user = labeller_invite(**form.cleaned_data)
        except InviteRefused as exc:
            form.add_error(None, str(exc))
        else:
            context.update(
                form=InviteForm(),
                invited=user,
                link=request.build_absolute_uri(welcome_path(user)),
                invited_message=INVITED.format(username=user.get_username(), days=context["days"]),
            )
            return render(request, "rollouts/labelling/invite.html", context)
    return render(request, "rollouts/labelling/invite.html", {**context, "form": form}, status=400)


class LabellerWelcomeView(PasswordResetConfirmView):
    """The invitation link: choose a password (the project's validators), then the labelling pages, logged in."""

    template_name = "rollouts/labelling/welcome_set_password.html"
    token_generator = invite_tokens
    post_reset_login = True
    # Several backends are configured (django-axes first): name the one the login goes through.
    post_reset_login_backend = "django.contrib.auth.backends.ModelBackend"
    success_url = reverse_lazy("labelling:schemes")
    title = "Choose your password"

    def get_user(self, uidb64):
        user = super().get_user(uidb64)
        return user if invitable(user) else None

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        if not self.validlink:
            token = self.kwargs.get("token")
            if token == self.reset_url_token:
                token = self.request.session.get(INTERNAL_RESET_SESSION_TOKEN)
            state = self.token_generator.token_state(self.user, token)
            context["problem"] = LINK_EXPIRED if state == STATE_EXPIRED else LINK_INVALID
        return context

    def render_to_response(self, context, **response_kwargs):
        if not self.validlink:
            response_kwargs["status"] = 400
        return super().render_to_response(context, **response_kwargs)

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, WELCOME.format(username=form.user.get_username()))
        return response
