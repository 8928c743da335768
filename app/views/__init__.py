"""Pages drawn by the router (``app/Home.py``) as functions: the home page."""
