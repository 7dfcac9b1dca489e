"""schemathesis hooks for scripts/schemathesis.sh (SCHEMATHESIS_HOOKS).

`since` and `until` (GET /v1/calls, /v1/cdrs, /v1/stats, /v1/recordings) must be in order: a rule
between two parameters, which JSON Schema cannot state. Generated cases with both
present, both valid times, and `until` not later than `since` are dropped; every other
case, valid or not, goes to the server.
"""

from datetime import datetime

import schemathesis


def _time(value):
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


@schemathesis.hook
def filter_query(ctx, query):
    if not isinstance(query, dict):
        return True
    since, until = _time(query.get("since")), _time(query.get("until"))
    return since is None or until is None or until > since


@schemathesis.hook
def filter_case(ctx, case):
    # The coverage and stateful phases filter whole cases, not query dicts.
    return filter_query(ctx, case.query)


# Query parameters that name a stored resource: the tool cannot know which names exist,
# so a generated name would be a 422 "no agent with id or username" (SPEC §4: a reference
# to a missing resource is a 422 naming the field), and the seeded ones may have been
# deleted by the tool's own DELETE requests. Just before a request with such a parameter
# goes out, the resource is (re)created and the parameter set to its name. Only values
# that fit the parameter's schema are replaced, so invalid ones still reach the server.
_REFERENCES = {
    # (path, parameter): (collection, body that creates it, its name)
    ("/v1/calls", "agent"): ("/v1/agents", {"username": "alice", "password": "alice-secret-1"}, "alice"),
    ("/v1/cdrs", "agent"): ("/v1/agents", {"username": "alice", "password": "alice-secret-1"}, "alice"),
    ("/v1/recordings", "agent"): ("/v1/agents", {"username": "alice", "password": "alice-secret-1"}, "alice"),
    ("/v1/cdrs", "trunk"): ("/v1/trunks", {"name": "sim", "provider": "simulated"}, "sim"),
    ("/v1/numbers", "trunk"): ("/v1/trunks", {"name": "sim", "provider": "simulated"}, "sim"),
}


def _fits_filter(value):
    # calls.rs FILTER: 1-256 characters, no control characters.
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 256
        and not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
    )


def _ensure(collection, body, name):
    import json
    import os
    import urllib.error
    import urllib.request

    api, key = os.environ["VOXGATE_ST_API"], os.environ["VOXGATE_ST_KEY"]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    get = urllib.request.Request(f"{api}{collection}/{name}", headers=headers)
    try:
        urllib.request.urlopen(get, timeout=10).close()
        return
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
    post = urllib.request.Request(
        f"{api}{collection}", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        urllib.request.urlopen(post, timeout=10).close()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # made meanwhile
            raise


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if not isinstance(case.query, dict):
        return
    for (path, param), (collection, body, name) in _REFERENCES.items():
        if case.operation.path == path and _fits_filter(case.query.get(param)):
            _ensure(collection, body, name)
            case.query[param] = name
