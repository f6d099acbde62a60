"""The service tier: the app served by gunicorn, as the platform serves it, on a free loopback
port, over real HTTP."""

import json
import os
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


def start(version):
    """gunicorn serving the app, as the manifest's command starts it; waits for /health."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "{{module}}.app:app"],
        cwd=ROOT,
        env=dict(os.environ, VERSION=version),
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
