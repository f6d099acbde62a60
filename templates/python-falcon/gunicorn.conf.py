"""gunicorn's settings for {{name}}, read from the folder it starts in.

The manifest's command gives the address (`--bind 0.0.0.0:$PORT`); the rest is here.
"""

import os

# Twelve-factor: every log line on stdout, where the platform collects them.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# After SIGTERM, requests in flight get this many seconds to finish.
graceful_timeout = 10
