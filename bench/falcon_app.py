# The talk's Falcon app ("The app" slides), on Falcon's current API (4.x):
# falcon.API() is now falcon.App(), resp.body is now resp.text, and the request
# body is read through req.bounded_stream, which stops at Content-Length.
# Everything else is as the talk wrote it: the same media-type check, the same
# json.loads / dict comprehension / json.dumps, the same case-insensitive rule.
import json

import falcon


class SampleResource:

    @staticmethod
    def on_get(req, resp):
        resp.text = 'Hello world\n'

    @staticmethod
    def on_post(req, resp):
        '''
        Given JSON input returns a JSON with only the keys that start with "A" (case insensitive).
        '''
        if req.content_type != 'application/json':
            raise falcon.HTTPUnsupportedMediaType(
                description='Media type needs to be application/json')
        body_json = json.loads(req.bounded_stream.read().decode('utf-8'))
        resp.text = json.dumps(
            {key: value for key, value in body_json.items() if key.lower().startswith('a')})


app = falcon.App()
app.add_route('/', SampleResource())
