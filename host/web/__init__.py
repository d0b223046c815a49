# Runs on CPython (host): the web layer — the daemon's versioned JSON API over the admin and store layers.
"""HTTP front end of the daemon: ``/v1`` JSON API, API tokens and scopes, server-sent events.

``app.create_app(ctx)`` builds the ASGI application; ``server.WebServer`` runs it in a thread;
``permissions`` decides every access; ``events.EventBus`` carries taps, decisions, device
state and sales to ``/v1/events`` (and optionally MQTT).
"""
