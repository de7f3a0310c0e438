"""pytest fixtures for apps using flask-ploy (registered as the ``ploy`` plugin)."""
