"""The unit tier: requests sent to the app in process with Falcon's test client."""

{{#redis}}
import json

{{/redis}}
import pytest
from falcon import testing

from {{module}}.app import create_app
{{#redis}}
from {{module}}.app import bound_redis_url
{{/redis}}


@pytest.fixture
def client():
    return testing.TestClient(create_app(version="1.2.3"))


def test_get_says_hello(client):
    result = client.simulate_get("/")
    assert result.status_code == 200
    assert result.text == "Hello world\n"


def test_post_keeps_the_keys_that_start_with_a(client):
    result = client.simulate_post("/", json={"abra": 123, "kadabra": 4})
    assert result.status_code == 200
    assert result.json == {"abra": 123}


def test_case_and_order_are_kept(client):
    body = '{"zeta": 1, "Apple": [1, {"b": 2}], "b": 3, "avocado": null}'
    result = client.simulate_post(
        "/", body=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert result.status_code == 200
    assert list(result.json.items()) == [("Apple", [1, {"b": 2}]), ("avocado", None)]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/xml"])
def test_other_media_types_get_415(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    result = client.simulate_post("/", body='{"abra": 123}', headers=headers)
    assert result.status_code == 415
    assert "application/json" in result.json["description"]


@pytest.mark.parametrize("body", ["{", "[1, 2]", ""])
def test_anything_but_a_json_object_is_a_400(client, body):
    result = client.simulate_post(
        "/", body=body, headers={"Content-Type": "application/json"}
    )
    assert result.status_code == 400


def test_health_reports_the_version(client):
    result = client.simulate_get("/health")
    assert result.status_code == 200
    assert result.json == {"status": "up", "version": "1.2.3"}
{{#redis}}


def test_visits_without_a_bound_redis_are_a_503():
    result = testing.TestClient(create_app(version="1", environ={})).simulate_get("/visits")
    assert result.status_code == 503
    assert "services" in result.json["description"]


def test_the_bound_redis_is_read_from_vcap_services():
    other = {"label": "user-provided", "tags": [], "credentials": {"uri": "https://x"}}
    by_parts = {"credentials": {"host": "10.0.0.5", "port": 6390, "password": "pw"}}
    by_uri = {"credentials": {"uri": "redis://:s3cret@127.0.0.1:7000"}}
    for shape in ({"label": "redis"}, {"label": "p-redis"}, {"label": "x", "tags": ["redis"]}):
        vcap = {"user-provided": [other], shape["label"]: [dict(shape, **by_parts)]}
        assert bound_redis_url(json.dumps(vcap)) == "redis://:pw@10.0.0.5:6390"
    assert bound_redis_url(json.dumps({"redis": [dict(by_uri, label="redis")]})) == (
        "redis://:s3cret@127.0.0.1:7000"
    )
    assert bound_redis_url(json.dumps({"user-provided": [other]})) is None
    assert bound_redis_url(None) is None
{{/redis}}
