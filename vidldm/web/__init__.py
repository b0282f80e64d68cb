"""The web studio (`vidldm serve`): every mode of the CLI in the browser, on gradio.

`build_app(pipe)` returns the gradio Blocks, to launch or to mount in your own app; `serve(...)` loads a
model and runs it. Importing this package imports gradio: the CLI imports it only for `vidldm serve`.
"""

import os

# Offline by default: gradio would otherwise report usage to its servers.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from vidldm.web.app import build_app  # noqa: E402
from vidldm.web.server import serve  # noqa: E402

__all__ = ["build_app", "serve"]
