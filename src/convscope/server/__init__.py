"""convscope.server: the live dashboard over a directory of runs (FastAPI + a plain HTML page).

    from convscope.server import create_app, serve, DashboardServer
    serve(Path("runs"), ServeConfig())          # http://127.0.0.1:8000/

Routes are listed in app.py; the page lives in static/. The server reads runs through
convscope.runs only, and its one write is a control row the trainer polls.
"""

from .app import create_app
from .serve import DashboardServer, new_token, serve, url_of

__all__ = ["DashboardServer", "create_app", "new_token", "serve", "url_of"]
