"""{{name}}: the talk's filter service, on Falcon's current API.

GET / says hello; POST / answers a JSON object with only the keys that start with "a" or "A";
any other media type gets 415. GET /health reports the version for the platform's health check.
{{#redis}}
GET /visits counts its own requests in the Redis service bound to the app (VCAP_SERVICES).
{{/redis}}
gunicorn serves it: `gunicorn --bind 0.0.0.0:$PORT {{module}}.app:app`.
"""

{{#redis}}
import json
{{/redis}}
import os

import falcon
{{#redis}}
import redis
{{/redis}}


class SampleResource:
    @staticmethod
    def on_get(req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Hello world\n"

    @staticmethod
    def on_post(req, resp):
        """Given JSON input, returns a JSON object with only the keys that start with "a"
        (case insensitive), in their original order."""
        media_type = (req.content_type or "").split(";")[0].strip().lower()
        if media_type != falcon.MEDIA_JSON:
            raise falcon.HTTPUnsupportedMediaType(
                description="Media type needs to be application/json"
            )
        # Malformed or empty JSON is a 400, raised by Falcon itself.
        body = req.get_media()
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest(description="The body must be a JSON object")
        resp.media = {
            key: value for key, value in body.items() if key.lower().startswith("a")
        }


class HealthResource:
    def __init__(self, version):
        self.version = version

    def on_get(self, req, resp):
        resp.media = {"status": "up", "version": self.version}


{{#redis}}
def bound_redis_url(vcap_services):
    """The URL of the first Redis service bound to the app, from the JSON that Cloud Foundry
    (and cdflow's local platform) put in VCAP_SERVICES; None when none is bound."""
    for instances in json.loads(vcap_services or "{}").values():
        for service in instances:
            if "redis" not in service.get("tags", []) and "redis" not in service.get("label", ""):
                continue
            credentials = service.get("credentials", {})
            if credentials.get("uri"):
                return credentials["uri"]
            password = credentials.get("password", "")
            return f"redis://:{password}@{credentials['host']}:{credentials['port']}"
    return None


class VisitsResource:
    """GET /visits: how many times it was asked, counted in Redis, so the count outlives
    restarts, deploys and rollbacks, and each environment has its own."""

    def __init__(self, client):
        self.client = client

    def on_get(self, req, resp):
        if self.client is None:
            raise falcon.HTTPServiceUnavailable(
                description="no Redis service is bound: list it under the manifest's services"
            )
        resp.media = {"visits": self.client.incr("{{name}}:visits")}


{{/redis}}
def create_app(version=None, environ=None):
    """The app; the version defaults to $VERSION, which the manifest sets."""
    environ = os.environ if environ is None else environ
    app = falcon.App()
    app.add_route("/", SampleResource())
    app.add_route("/health", HealthResource(version or environ.get("VERSION", "unknown")))
{{#redis}}
    # Connects on first use: the app starts, and answers /health, while Redis is away.
    url = bound_redis_url(environ.get("VCAP_SERVICES"))
    app.add_route("/visits", VisitsResource(redis.Redis.from_url(url) if url else None))
{{/redis}}
    return app


app = create_app()
