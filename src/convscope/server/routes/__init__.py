"""The dashboard's HTTP routes: data (JSON), images (PNG), uploads (see app.py for the list)."""
