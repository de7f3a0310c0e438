"""The flask-ploy benchmark suite: ``python -m bench`` (or ``make bench``).

Compares flask-ploy's Cache and State bindings with what a Flask user would
write instead (raw redis-py, raw sqlite3, raw psycopg, Flask-Caching,
diskcache, Flask-SQLAlchemy ORM code), over HTTP with gunicorn and wrk, and
as the data grows. See docs/performance.rst for the method and the results.
"""
