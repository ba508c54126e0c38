"""The web dashboard: policies, dry runs, decisions, approvals and spend, in a browser.

Server-rendered pages (Starlette + Jinja2) with htmx for partial updates and Chart.js for charts,
both vendored under ``static/vendor`` (no CDN: it works offline and in air-gapped clusters).
Everything it changes goes through the admin API with the signed-in person's own token, so the
admin API's roles and validation apply; decisions come from the shared Redis Stream
(``audit/stream.py``) or, without Redis, from one replica's live stream.
"""
