"""The e2e tier: against a deployed instance at APP_URL. cdflow runs it after each push to
staging (`tox -e e2e` with APP_URL set to the environment's route). By hand:
`APP_URL=http://127.0.0.1:8081 tox -e e2e`, or, as in the talk, `python3 e2e/test_e2e.py`."""

import json
import os
import sys
import urllib.error
import urllib.request

import pytest


@pytest.fixture
def app_url():
    url = os.environ.get("APP_URL", "").rstrip("/")
    if not url:
        pytest.fail("APP_URL is not set: the e2e tier needs the address of a deployed instance")
    return url


def request(url, data=None, content_type=None):
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_says_hello(app_url):
    assert request(f"{app_url}/") == (200, "Hello world\n")


def test_filters_the_talks_example(app_url):
    status, body = request(f"{app_url}/", b'{"abra": 123, "kadabra": 4}', "application/json")
    assert status == 200
    assert json.loads(body) == {"abra": 123}


def test_refuses_other_media_types(app_url):
    assert request(f"{app_url}/", b"abra", "text/plain")[0] == 415


def test_is_healthy(app_url):
    status, body = request(f"{app_url}/health")
    assert status == 200
    assert json.loads(body)["status"] == "up"
{{#redis}}


def test_visits_are_counted_in_the_bound_redis(app_url):
    status, body = request(f"{app_url}/visits")
    assert status == 200, body
    first = json.loads(body)["visits"]
    assert json.loads(request(f"{app_url}/visits")[1])["visits"] > first
{{/redis}}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
