"""Every status openapi.yaml documents is one the service really answers, in the documented shape.

Run by tests/api/contract.rs around its Schemathesis run, in two phases:

  up    (database up, before the fuzzing run): sends the requests fuzzing cannot make up
        (a caller key without the scope, a malformed or oversized body, a tenant whose
        edX rejects it, hangs or is down), checks each answer's status and validates it
        against the spec with Schemathesis' conformance checks, and records the
        (operation, status) pairs reached in STATE.
  down  (database stopped, after the fuzzing run): does the same for the routes that
        answer 503 when the store is unreachable, adds what the fuzzing run reached (its
        HAR report), and fails listing every documented (operation, status) still not
        reached, but for the few in EXEMPT, which no client can provoke on purpose.

Environment: BASE_URL, SPEC, STATE, HAR (down), ADMIN_KEY, TOKEN_ONLY_KEY (scope
token:acme), READ_ONLY_KEY (scope tenants:read). Tenants: acme (healthy), rejected (edX
refuses its credentials), slow (edX never answers), down (edX answers 503), garbage (edX
answers 200 with a body that is not JSON); each has an issuer client `client-<tenant>`.
"""

import json
import os
import re
import sys
import urllib.parse

import requests
import schemathesis
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

BASE_URL = os.environ["BASE_URL"]
SCHEMA = schemathesis.openapi.from_path(os.environ["SPEC"])
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}
PROXY = "/tenants/{id}/proxy/{path}"

# Documented, and real, but no client can provoke them on purpose. (So is 500, an
# internal failure, which every route documents and none should ever answer.)
EXEMPT = {
    ("PATCH /tenants/{id}", "409"): "the tenant kept changing under concurrent updates",
    ("POST /api-keys", "409"): "a generated key id collided with an existing one",
    ("POST /webhooks", "409"): "a generated webhook id collided with an existing one",
}

ADMIN = os.environ["ADMIN_KEY"]
TOKEN_ONLY = os.environ["TOKEN_ONLY_KEY"]
READ_ONLY = os.environ["READ_ONLY_KEY"]
BIG = "x" * (1024 * 1024 + 16)
# The app under test sends no webhook deliveries (they wait in the outbox), so this URL
# is never called.
WEBHOOK = {"url": "http://127.0.0.1:9/hook", "events": ["*"]}
UNKNOWN_WEBHOOK = {"id": "wh_00000000000000000000000000000000"}
# A workload identity provider (its one key is an Ed25519 public key) and a mapping.
PROVIDER = {"id": "contract-idp", "issuer": "https://idp.example", "audience": "tokenvend",
            "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519",
                               "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}}
MAPPING = {"id": "contract-map", "provider": "contract-idp", "match": {"sub": "ci-*"},
           "scopes": ["tenants:read"]}
UNKNOWN_IDENTITY = {"id": "no-such-identity"}
IDENTITY_ROUTES = [("providers", PROVIDER), ("mappings", MAPPING)]


def documented():
    pairs = set()
    for path, item in SCHEMA.raw_schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                for status in operation["responses"]:
                    # `default`: any answer of the edX API behind the proxy, passed on.
                    if status != "default":
                        pairs.add((f"{method.upper()} {path}", status))
    return pairs


def passes_any_status():
    """The operations whose `default` answer is whatever the API behind them says."""
    return {
        f"{method.upper()} {path}"
        for path, item in SCHEMA.raw_schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS and "default" in operation["responses"]
    }


def reached_by_fuzzing(har_path):
    """The (operation, status) pairs in the fuzzing run's HAR report."""
    routes = []
    for path in SCHEMA.raw_schema["paths"]:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"
        routes.append((re.compile(pattern), path))
    with open(har_path) as f:
        entries = json.load(f)["log"]["entries"]
    reached = set()
    for entry in entries:
        url_path = urllib.parse.urlparse(entry["request"]["url"]).path
        for pattern, path in routes:
            if pattern.match(url_path):
                method = entry["request"]["method"]
                reached.add((f"{method} {path}", str(entry["response"]["status"])))
                break
    return reached


def expect(status, method, path, key=ADMIN, path_parameters=None, query=None, body=None,
           media_type=None, raw=None, auth=None):
    """Sends one request and checks its answer: the status, then conformance to the spec."""
    operation = SCHEMA[path][method]
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    case = operation.Case(
        path_parameters=path_parameters or {},
        query=query or {},
        headers=headers,
        **({"body": body, "media_type": media_type} if body is not None else {}),
    )
    if raw is not None:
        url = BASE_URL + path.format(**(path_parameters or {}))
        response = requests.request(
            method, url, data=raw, auth=auth,
            headers={**headers, "Content-Type": media_type}, timeout=30,
        )
    else:
        response = case.call(base_url=BASE_URL, timeout=30)
    label = f"{method} {path}"
    assert response.status_code == int(status), (
        f"{label}: expected {status}, got {response.status_code}: {response.text[:300]}"
    )
    case.validate_response(response, checks=CHECKS)
    return (label, status)


def oauth_form(tenant, key):
    return {
        "grant_type": "client_credentials",
        "client_id": tenant,
        "client_secret": key,
        "token_type": "jwt",
    }


def phase_up():
    reached = set()
    acme = {"id": "acme"}
    # Forced refreshes first, before any request starts a failure cool-down (during
    # one, a forced refresh is refused with 429 without calling edX).
    for status, tenant in [("200", "acme"), ("502", "rejected"), ("503", "down"),
                           ("504", "slow")]:
        reached.add(expect(status, "POST", "/tenants/{id}/token/refresh",
                           path_parameters={"id": tenant}))
    form = "application/x-www-form-urlencoded"
    merge = "application/merge-patch+json"
    # A key without the scope an operation needs.
    for method, path, params in [
        ("GET", "/tenants", None),
        ("POST", "/tenants", None),
        ("GET", "/tenants/{id}", acme),
        ("PATCH", "/tenants/{id}", acme),
        ("DELETE", "/tenants/{id}", acme),
        ("POST", "/tenants/{id}/token/refresh", acme),
        ("GET", "/tenants/{id}/token/status", acme),
        ("GET", "/tokens/status", None),
        ("GET", "/upstream/budget", None),
        ("GET", "/api-keys", None),
        ("POST", "/api-keys", None),
        ("DELETE", "/api-keys/{id}", {"id": "k3v9q2m8x1ab"}),
        ("GET", "/audit-events", None),
        ("GET", "/metrics", None),
        ("POST", "/webhooks", None),
        ("GET", "/webhooks", None),
        ("GET", "/webhooks/{id}", UNKNOWN_WEBHOOK),
        ("DELETE", "/webhooks/{id}", UNKNOWN_WEBHOOK),
        ("GET", "/webhooks/{id}/deliveries", UNKNOWN_WEBHOOK),
        ("POST", "/webhooks/{id}/test", UNKNOWN_WEBHOOK),
    ] + [
        (method, f"/identity/{kind}{suffix}", params)
        for kind, _ in IDENTITY_ROUTES
        for method, suffix, params in [("POST", "", None), ("GET", "", None),
                                       ("GET", "/{id}", UNKNOWN_IDENTITY),
                                       ("DELETE", "/{id}", UNKNOWN_IDENTITY)]
    ] + [("GET", "/identity/recent", None)]:
        body = {
            ("POST", "/identity/providers"): PROVIDER,
            ("POST", "/identity/mappings"): MAPPING,
            ("POST", "/webhooks"): WEBHOOK,
            ("POST", "/api-keys"): {"name": "n", "scopes": ["token:acme"]},
            ("POST", "/tenants"): {"id": "x", "name": "x", "client_id": "x", "client_secret": "x"},
            ("PATCH", "/tenants/{id}"): {"name": "x"},
        }.get((method, path))
        reached.add(expect("403", method, path, key=TOKEN_ONLY, path_parameters=params,
                           body=body, media_type=merge if method == "PATCH" else None))
    reached.add(expect("403", "GET", "/tenants/{id}/token", key=READ_ONLY, path_parameters=acme))
    reached.add(expect("401", "GET", "/metrics", key=None))

    # Malformed and oversized bodies.
    reached.add(expect("400", "POST", "/tenants", raw=b"{", media_type="application/json"))
    reached.add(expect("400", "PATCH", "/tenants/{id}", path_parameters=acme, raw=b"{",
                       media_type=merge))
    reached.add(expect("400", "POST", "/api-keys", raw=b"{", media_type="application/json"))
    big_json = json.dumps({"name": BIG}).encode()
    reached.add(expect("413", "POST", "/tenants", raw=big_json, media_type="application/json"))
    reached.add(expect("413", "PATCH", "/tenants/{id}", path_parameters=acme, raw=big_json,
                       media_type=merge))
    reached.add(expect("413", "POST", "/api-keys", raw=big_json, media_type="application/json"))
    reached |= webhooks()
    reached |= identities()

    for path in ["/oauth2/access_token", "/oauth2/v1/access_token"]:
        reached.add(expect("200", "POST", path, key=None, body=oauth_form("acme", TOKEN_ONLY),
                           media_type=form))
        reached.add(expect("413", "POST", path, key=None,
                           raw=urllib.parse.urlencode({**oauth_form("acme", TOKEN_ONLY), "pad": BIG}),
                           media_type=form))
        reached.add(expect("502", "POST", path, key=None, body=oauth_form("rejected", ADMIN),
                           media_type=form))
        reached.add(expect("503", "POST", path, key=None, body=oauth_form("down", ADMIN),
                           media_type=form))

    # edX trouble behind the token route.
    for status, tenant in [("502", "rejected"), ("503", "down"), ("504", "slow")]:
        reached.add(expect(status, "GET", "/tenants/{id}/token", path_parameters={"id": tenant}))
    # A forced refresh during the cool-down those failures started: 429, no edX call.
    reached.add(expect("429", "POST", "/tenants/{id}/token/refresh",
                       path_parameters={"id": "rejected"}))
    reached |= proxy_and_invalidation()
    reached |= verify_failures()
    reached |= rate_limited()
    return reached


def webhooks():
    """Every answer of the webhook routes that the fuzzer cannot reach by chance."""
    reached = set()
    for status, path, params in [
        ("404", "/webhooks/{id}", UNKNOWN_WEBHOOK),
        ("404", "/webhooks/{id}/deliveries", UNKNOWN_WEBHOOK),
    ]:
        reached.add(expect(status, "GET", path, path_parameters=params))
    reached.add(expect("404", "DELETE", "/webhooks/{id}", path_parameters=UNKNOWN_WEBHOOK))
    reached.add(expect("404", "POST", "/webhooks/{id}/test", path_parameters=UNKNOWN_WEBHOOK))
    reached.add(expect("201", "POST", "/webhooks", body=WEBHOOK))
    reached.add(expect("422", "POST", "/webhooks", body={**WEBHOOK, "url": "ftp://x.example/"}))
    reached.add(expect("400", "POST", "/webhooks", raw=b"{", media_type="application/json"))
    reached.add(expect("413", "POST", "/webhooks", raw=json.dumps({"url": BIG}).encode(),
                       media_type="application/json"))
    reached.add(expect("415", "POST", "/webhooks", raw=b"{}", media_type="text/plain"))
    created = requests.post(BASE_URL + "/webhooks", json=WEBHOOK,
                            headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert created.status_code == 201, created.text
    webhook = {"id": created.json()["id"]}
    reached.add(expect("202", "POST", "/webhooks/{id}/test", path_parameters=webhook))
    reached.add(expect("200", "GET", "/webhooks/{id}", path_parameters=webhook))
    reached.add(expect("200", "GET", "/webhooks/{id}/deliveries", path_parameters=webhook))
    reached.add(expect("200", "GET", "/webhooks"))
    reached.add(expect("204", "DELETE", "/webhooks/{id}", path_parameters=webhook))
    return reached


def identities():
    """Every answer of the identity provider and mapping routes."""
    reached = set()
    for kind, body in IDENTITY_ROUTES:
        path = f"/identity/{kind}"
        for method in ["GET", "DELETE"]:
            reached.add(expect("404", method, path + "/{id}", path_parameters=UNKNOWN_IDENTITY))
        reached.add(expect("201", "POST", path, body=body))
        reached.add(expect("409", "POST", path, body=body))
        reached.add(expect("422", "POST", path, body={**body, "id": "Not An Id"}))
        reached.add(expect("400", "POST", path, raw=b"{", media_type="application/json"))
        reached.add(expect("413", "POST", path, raw=json.dumps({"id": BIG}).encode(),
                           media_type="application/json"))
        reached.add(expect("415", "POST", path, raw=b"{}", media_type="text/plain"))
        reached.add(expect("200", "GET", path))
        reached.add(expect("200", "GET", path + "/{id}", path_parameters={"id": body["id"]}))
    for kind, body in reversed(IDENTITY_ROUTES):
        reached.add(expect("204", "DELETE", f"/identity/{kind}/{{id}}",
                           path_parameters={"id": body["id"]}))
    return reached


def proxy_and_invalidation():
    """tokenvend's own answers on the proxy (every method) and on invalidation."""
    reached = set()
    acme = {"id": "acme", "path": "enterprise-customer"}
    big = b"x" * (10 * 1024 * 1024 + 1)
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]:
        reached.add(expect("401", method, PROXY, key=None, path_parameters=acme))
        reached.add(expect("403", method, PROXY, key=READ_ONLY, path_parameters=acme))
        reached.add(expect("404", method, PROXY, path_parameters={"id": "ghost", "path": "x"}))
        # An encoded `/` could leave api_base_url: refused before anything is sent.
        reached.add(expect("400", method, PROXY, path_parameters={"id": "acme", "path": "a%2Fb"},
                           raw=b"", media_type="application/octet-stream"))
        reached.add(expect("413", method, PROXY, path_parameters=acme, raw=big,
                           media_type="application/octet-stream"))
        for status, tenant in [("502", "rejected"), ("503", "down"), ("504", "slow")]:
            reached.add(expect(status, method, PROXY,
                               path_parameters={"id": tenant, "path": "x"}))
    invalidate = "/tenants/{id}/token/invalidate"
    acme = {"id": "acme"}
    json_type = "application/json"
    reached.add(expect("200", "POST", invalidate, path_parameters=acme,
                       body={"fingerprint": "0123456789abcdef"}, media_type=json_type))
    reached.add(expect("401", "POST", invalidate, key=None, path_parameters=acme,
                       body={"fingerprint": "0123456789abcdef"}, media_type=json_type))
    reached.add(expect("403", "POST", invalidate, key=READ_ONLY, path_parameters=acme,
                       body={"fingerprint": "0123456789abcdef"}, media_type=json_type))
    reached.add(expect("404", "POST", invalidate, path_parameters={"id": "ghost"},
                       body={"fingerprint": "0123456789abcdef"}, media_type=json_type))
    reached.add(expect("400", "POST", invalidate, path_parameters=acme, raw=b"{",
                       media_type=json_type))
    reached.add(expect("413", "POST", invalidate, path_parameters=acme,
                       raw=json.dumps({"fingerprint": BIG}).encode(), media_type=json_type))
    reached.add(expect("422", "POST", invalidate, path_parameters=acme,
                       body={"fingerprint": "x"}, media_type=json_type))
    # The held token was fetched moments ago: too soon to drop it.
    held = requests.get(BASE_URL + "/tenants/acme/token",
                        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
    reached.add(expect("429", "POST", invalidate, path_parameters=acme,
                       body={"fingerprint": held["fingerprint"]}, media_type=json_type))
    return reached


def verify_failures():
    """`?verify=true` on tenant writes, with credentials of the local issuer's failing
    clients: refused (422 with upstream_error), garbage (502), down (503), hanging (504).
    Nothing is stored, and acme keeps its settings."""
    reached = set()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    acme_before = requests.get(BASE_URL + "/tenants/acme", headers=admin, timeout=30).json()
    token_url = acme_before["token_url"]
    merge = "application/merge-patch+json"
    for status, client in [("422", "client-rejected"), ("502", "client-garbage"),
                           ("503", "client-down"), ("504", "client-slow")]:
        tenant = f"verify-{status}"
        reached.add(expect(status, "POST", "/tenants", query={"verify": "true"}, body={
            "id": tenant, "name": "n", "client_id": client, "client_secret": "s3cret",
            "token_url": token_url}))
        gone = requests.get(f"{BASE_URL}/tenants/{tenant}", headers=admin, timeout=30)
        assert gone.status_code == 404, f"{tenant} was stored: {gone.status_code}"
        # A client id edX refused is not verified again within the cool-down (429): the
        # PATCH tries another one that the issuer does not know (refused the same way).
        patched = f"{client}-patched" if status == "422" else client
        reached.add(expect(status, "PATCH", "/tenants/{id}", path_parameters={"id": "acme"},
                           query={"verify": "true"},
                           body={"client_id": patched, "client_secret": "s3cret"},
                           media_type=merge))
    acme_after = requests.get(BASE_URL + "/tenants/acme", headers=admin, timeout=30).json()
    assert acme_after == acme_before, (acme_before, acme_after)
    return reached


def rate_limited():
    """429 on every operation that documents it: a key with `rate_limit: 1` empties its
    bucket with one request, and the next, to the operation, is refused before anything
    else is looked at."""
    reached = set()
    created = requests.post(
        BASE_URL + "/api-keys", json={"name": "limited", "scopes": ["admin"], "rate_limit": 1},
        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30,
    )
    assert created.status_code == 201, created.text
    limited = created.json()["key"]
    bodies = {
        "POST /webhooks": WEBHOOK,
        "POST /identity/providers": PROVIDER,
        "POST /identity/mappings": MAPPING,
        "POST /api-keys": {"name": "n", "scopes": ["token:acme"]},
        "POST /tenants": {"id": "x", "name": "x", "client_id": "x", "client_secret": "x"},
        "PATCH /tenants/{id}": {"name": "x"},
    }
    for label in sorted(label for label, status in documented() if status == "429"):
        method, path = label.split(" ", 1)
        requests.get(BASE_URL + "/api-keys", headers={"Authorization": f"Bearer {limited}"},
                     timeout=30)
        if path.startswith("/oauth2/"):
            reached.add(expect("429", method, path, key=None, body=oauth_form("acme", limited),
                               media_type="application/x-www-form-urlencoded"))
        else:
            reached.add(expect(
                "429", method, path, key=limited,
                path_parameters=(
                    {"id": "acme", "path": "x"} if path == PROXY
                    else ({"id": "acme"} if "/tenants/" in path
                          else UNKNOWN_IDENTITY if "/identity/" in path else UNKNOWN_WEBHOOK)
                    if "{id}" in path else None
                ),
                body=bodies.get(label),
                media_type="application/merge-patch+json" if method == "PATCH" else None,
            ))
    assert len(reached) >= 22, reached
    return reached


def phase_down():
    reached = set()
    acme = {"id": "acme"}
    reached.add(expect("503", "GET", "/readyz", key=None))
    reached.add(expect("503", "GET", "/tenants"))
    reached.add(expect("503", "POST", "/tenants", body={
        "id": "during-outage", "name": "n", "client_id": "c", "client_secret": "s"}))
    reached.add(expect("503", "GET", "/tenants/{id}", path_parameters=acme))
    reached.add(expect("503", "PATCH", "/tenants/{id}", path_parameters=acme,
                       body={"name": "renamed"}, media_type="application/merge-patch+json"))
    reached.add(expect("503", "DELETE", "/tenants/{id}", path_parameters=acme))
    reached.add(expect("503", "GET", "/api-keys"))
    reached.add(expect("503", "POST", "/api-keys", body={"name": "n", "scopes": ["token:acme"]}))
    reached.add(expect("503", "DELETE", "/api-keys/{id}", path_parameters={"id": "k3v9q2m8x1ab"}))
    reached.add(expect("503", "GET", "/audit-events"))
    reached.add(expect("503", "POST", "/webhooks", body=WEBHOOK))
    reached.add(expect("503", "GET", "/webhooks"))
    for method, path in [("GET", "/webhooks/{id}"), ("DELETE", "/webhooks/{id}"),
                         ("GET", "/webhooks/{id}/deliveries"), ("POST", "/webhooks/{id}/test")]:
        reached.add(expect("503", method, path, path_parameters=UNKNOWN_WEBHOOK))
    for kind, body in IDENTITY_ROUTES:
        reached.add(expect("503", "POST", f"/identity/{kind}", body=body))
        reached.add(expect("503", "GET", f"/identity/{kind}"))
        for method in ["GET", "DELETE"]:
            reached.add(expect("503", method, f"/identity/{kind}/{{id}}",
                               path_parameters=UNKNOWN_IDENTITY))
    return reached


def main():
    phase = sys.argv[1]
    state_path = os.environ["STATE"]
    if phase == "up":
        reached = phase_up()
    else:
        with open(state_path) as f:
            reached = {tuple(pair) for pair in json.load(f)}
        reached |= phase_down()
        reached |= reached_by_fuzzing(os.environ["HAR"])
    with open(state_path, "w") as f:
        json.dump(sorted(reached), f)
    if phase == "down":
        missing = sorted(
            pair for pair in documented() - reached
            if pair not in EXEMPT and pair[1] != "500"
        )
        # Methods a path does not have get 405 (Schemathesis probes them): not operations.
        operations = {op for op, _ in documented()}
        undocumented = sorted(
            pair for pair in reached - documented()
            if pair[0] in operations and pair[0] not in passes_any_status()
        )
        print(json.dumps({"reached": len(reached), "missing": missing,
                          "undocumented": undocumented}))
        if missing or undocumented:
            sys.exit(1)


if __name__ == "__main__":
    main()
