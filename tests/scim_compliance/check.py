"""Runs scim2-tester, a SCIM 2.0 compliance checker, against a live
SCIM endpoint: discovery, then create, read, filter, replace and delete of
every resource type the server publishes.

Usage: check.py BASE_URL CALLER
  BASE_URL  e.g. http://127.0.0.1:8080/scim/v2
  CALLER    the principal to call as (development header; the server runs
            with dev_auth on loopback)

Prints every check and exits 1 when any check found a violation of a
mandatory requirement (ERROR or CRITICAL), except the known deviations
below, which follow from how SCIM maps onto the directory (README, "SCIM
provisioning").
"""

import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


# (check title, words in its reason): deviations the service makes on purpose.
KNOWN_DEVIATIONS = [
    # One email address is kept, shown as the primary work address.
    ("check_add_attribute", "unexpected value for 'emails'"),
    ("check_replace_attribute", "unexpected value for 'emails'"),
    # Every user has a display name: without one, the userName stands in.
    ("check_remove_attribute", "did not remove attribute 'displayName'"),
    # A user is active or blocked; without `active`, they are active.
    ("check_remove_attribute", "did not remove attribute 'active'"),
]


def known(result) -> bool:
    return any(
        result.title == title and words in (result.reason or "")
        for title, words in KNOWN_DEVIATIONS
    )


def main() -> int:
    base_url, caller = sys.argv[1], sys.argv[2]
    http = Client(base_url=base_url, headers={"x-entitlements-user": caller}, timeout=30)
    client = SyncSCIMClient(http)
    results = check_server(client)
    failed = [
        r for r in results if r.status in (Status.ERROR, Status.CRITICAL) and not known(r)
    ]
    for result in results:
        mark = " (known deviation)" if known(result) else ""
        print(f"{result.status.name:10} {result.title}: {result.reason or ''}{mark}")
    print(f"{len(results)} checks, {len(failed)} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
