"""edX's own Python client (edx-rest-api-client) against tokenvend's edX-compatible endpoint.

Run by tests/api/interop.rs with the service up and a tenant whose token was never asked
for. Environment: TOKENVEND_URL, TENANT, KEY (a caller key with token scope for TENANT).
Prints one JSON object: what the client saw. The Rust side checks it against the service
and the local issuer's call count.
"""

import json
import os
import sys
import threading

import django
from django.conf import settings

settings.configure(
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
)
django.setup()

import requests  # noqa: E402
from edx_django_utils.cache import TieredCache  # noqa: E402
from edx_rest_api_client.client import (  # noqa: E402
    OAuthAPIClient,
    get_and_cache_oauth_access_token,
)

BASE_URL = os.environ["TOKENVEND_URL"]
TENANT = os.environ["TENANT"]
KEY = os.environ["KEY"]
THREADS = 32


def concurrent_cold_fetches():
    """32 threads ask at once, each with a cold client-side cache."""
    barrier = threading.Barrier(THREADS)
    tokens = [None] * THREADS
    errors = []

    def ask(i):
        try:
            barrier.wait()
            token, _expires_at = get_and_cache_oauth_access_token(
                BASE_URL + "/oauth2/access_token", TENANT, KEY
            )
            tokens[i] = token
        except Exception as error:  # reported to the Rust side, which fails the test
            errors.append(repr(error))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tokens, errors


def main():
    tokens, errors = concurrent_cold_fetches()

    TieredCache.dangerous_clear_all_tiers()
    client = OAuthAPIClient(BASE_URL, TENANT, KEY)
    client_token = client.get_jwt_access_token()

    TieredCache.dangerous_clear_all_tiers()
    wrong = OAuthAPIClient(BASE_URL, TENANT, "tv_wrongwrongwr_" + "x" * 40)
    wrong_key = {"raised": None, "status": None}
    try:
        wrong.get_jwt_access_token()
    except requests.HTTPError as error:
        wrong_key = {"raised": "HTTPError", "status": error.response.status_code}

    json.dump(
        {
            "thread_tokens": tokens,
            "thread_errors": errors,
            "client_token": client_token,
            "wrong_key": wrong_key,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
