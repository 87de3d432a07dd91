from __future__ import annotations

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from inference.llm import tls_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()

# Made while the server starts, not during someone's first question: the model clients' TLS
# context reads the whole CA bundle (50 to 110 ms on a 2-core AMD EPYC). Without a model
# configured nothing would use it.
if settings.VLLM_URLS:
    tls_context()
