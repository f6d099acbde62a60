"""{{name}}: the talk's filter service, on Falcon's current API.

GET / says hello; POST / answers a JSON object with only the keys that start with "a" or "A";
any other media type gets 415. GET /health reports the version for the platform's health check.
gunicorn serves it: `gunicorn --bind 0.0.0.0:$PORT {{module}}.app:app`.
"""

import os

import falcon


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


def create_app(version=None):
    """The app; the version defaults to $VERSION, which the manifest sets."""
    app = falcon.App()
    app.add_route("/", SampleResource())
    app.add_route("/health", HealthResource(version or os.environ.get("VERSION", "unknown")))
    return app


app = create_app()
