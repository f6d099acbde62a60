"""The service tier: the app served by gunicorn, as the platform serves it, on a free loopback
port, over real HTTP."""

import json
import os
{{#redis}}
import shutil
{{/redis}}
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url, data=None, content_type=None):
    """The status and the body of a request; HTTP errors are answers too."""
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def start(version, **environ):
    """gunicorn serving the app, as the manifest's command starts it, with `environ` added to
    its environment; waits for /health."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "{{module}}.app:app"],
        cwd=ROOT,
        env=dict(os.environ, VERSION=version, **environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if request(f"{url}/health")[0] == 200:
                return process, url
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gunicorn did not serve the app: {process.communicate()[0]}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def service():
    process, url = start("9.9.9")
    yield url
    process.kill()
    process.wait()


def test_get_says_hello(service):
    assert request(f"{service}/") == (200, "Hello world\n")


def test_post_filters_the_talks_example(service):
    status, body = request(f"{service}/", b'{"abra": 123, "kadabra": 4}', "application/json")
    assert status == 200
    assert json.loads(body) == {"abra": 123}


def test_other_media_types_get_415(service):
    status, _ = request(f"{service}/", b'{"abra": 123}', "text/plain")
    assert status == 415


def test_health_reports_the_version(service):
    status, body = request(f"{service}/health")
    assert status == 200
    assert json.loads(body) == {"status": "up", "version": "9.9.9"}


def test_sigterm_stops_it_gracefully():
    process, url = start("1.0.0")
    assert request(f"{url}/")[0] == 200
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, output
    # The request's access line went to stdout, where the platform collects logs.
    assert '"GET / HTTP/1.1" 200' in output, output
{{#redis}}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port, with a password, as a bound service has."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (`apt-get install redis-server`): the app binds a Redis service")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", ""]
    process = subprocess.Popen(
        [server, *args, "--requirepass", "s3cret"], stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://:s3cret@127.0.0.1:{port}"
    process.kill()
    process.wait()


def test_visits_are_counted_in_the_bound_redis(redis_url):
    binding = {"name": "cache", "label": "redis", "tags": ["redis"], "credentials": {"uri": redis_url}}
    process, url = start("1.0.0", VCAP_SERVICES=json.dumps({"redis": [binding]}))
    try:
        counts = [json.loads(request(f"{url}/visits")[1])["visits"] for _ in range(3)]
    finally:
        process.kill()
        process.wait()
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]
{{/redis}}
