"""The API's documentation works with no internet: /docs and /redoc load their assets from the service itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from serving.api import create_app
from serving.settings import load_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(trained, tmp_path_factory):
    database = tmp_path_factory.mktemp("docs") / "decisions.db"
    settings = load_settings(model_uri=str(trained["bundle_path"]), database_url=f"sqlite:///{database}",
                             api_keys="docs-key-for-tests-0001", admin_keys="docs-admin-key-0001")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_every_asset_from_the_service(client, page):
    html = client.get(page)
    assert html.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html.text)
    assert assets and not any(a.startswith(("http://", "https://", "//")) for a in assets)
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 10_000, asset
    assert "cdn" not in html.text.lower()


def test_openapi_documents_every_error_a_route_answers_with_the_error_body(client):
    spec = client.get("/openapi.json").json()
    problem = spec["components"]["schemas"]["Problem"]
    assert "detail" in problem["properties"]
    expected = {("/v1/score", "post"): {"200", "401", "403", "408", "413", "422", "431", "503"},
                ("/v1/decisions/{decision_id}", "get"): {"200", "401", "403", "404", "503"},
                ("/v1/decisions/{decision_id}/outcome", "post"): {"201", "401", "403", "404", "422", "503"},
                ("/v1/admin/reload", "post"): {"200", "401", "403", "409"}}
    for (path, method), codes in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert codes <= set(responses), (path, set(responses))
        for code in codes - {"200", "201", "422"}:
            assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
