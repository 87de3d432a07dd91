"""Django's SQLite backend, its connections shared by the request threads (see `base`)."""
