"""The contract every backend honours, as mixins, one per area (huey's and kombu's layout).

``cases.py`` holds what a backend brings: how to reach it, a put from another
client, how to wait for a handler to drain a tube, and its legitimate
differences as class attributes. Each area module holds one mixin of tests.
``tests/test_contract.py`` joins them: one test class per backend. A new
backend joins by writing its case and one class there.
"""

import pytest

# The mixins are imported by test modules, not collected: have pytest rewrite
# their asserts as it does a test module's, so a failure shows its values.
AREAS = (
    "cases",
    "codec",
    "factory",
    "handler",
    "operate",
    "pipelining",
    "queue_api",
    "settle_after_close",
    "stress",
    "survival",
)
pytest.register_assert_rewrite(*(f"{__name__}.{area}" for area in AREAS))
