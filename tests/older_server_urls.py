"""The URLs of a server from before ``POST /process_reward_label/batch``: every path of ``prmsite.urls`` but that one
(an older server answers 404 there). For the tests of the clients' fallback to single posts, with
``settings.ROOT_URLCONF = "tests.older_server_urls"``."""

from django.urls import URLResolver, include, path

from prmsite import urls as current
from rollouts import urls as rollouts_urls

BATCH_PATH_NAME = "process-reward-label-batch"

_rollout_patterns = [pattern for pattern in rollouts_urls.urlpatterns if pattern.name != BATCH_PATH_NAME]
urlpatterns = [
    path("", include(_rollout_patterns))
    if isinstance(pattern, URLResolver) and pattern.urlconf_name is rollouts_urls
    else pattern
    for pattern in current.urlpatterns
]
handler400 = current.handler400
handler403 = current.handler403
handler404 = current.handler404
handler500 = current.handler500
