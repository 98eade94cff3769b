"""Schemathesis over the OpenAPI document: no 500, and every response as the document says.

Bounded for CI: a few dozen examples an operation, no deadline per example. Schema-valid
requests may still be refused (the catalog knows more than the schema can say), so the
positive-data check is left out; every other default check runs, including ignored auth,
unsupported methods and the rejection of schema-invalid data.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import positive_data_acceptance

from gentask.api.app import create_app
from gentask.config import Settings
from tests.integration.api.conftest import KEYS, launch

MAX_EXAMPLES = 20


@pytest.fixture(scope="module")
def fuzzed(cluster, module_namespace):
    # event streams end after half a second here, so that a call of GET /api/v1/ai/events returns
    api = launch(cluster, module_namespace, api_max_unfinished_per_user=0, api_sse_max_seconds=0.5)
    yield api
    api.stop()


# The document is the app's own: building the app touches no cluster (that happens in its lifespan).
schema = schemathesis.openapi.from_dict(create_app(Settings(api_keys="k:u")).openapi())


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_responses_match_the_schema(case, fuzzed):
    case.call_and_validate(base_url=fuzzed.url, headers={"Authorization": f"Bearer {KEYS['alice']}"},
                           excluded_checks=[positive_data_acceptance], timeout=30)
