"""Policy texts the admin API tests push: a good team policy, and one with two mistakes."""

TEAM = """policy_name: acme_ml
org: acme
team: ml
rules:
  - type: content_filter
    id: words
    keywords: [classified]
"""

# Two mistakes: an unknown rule type (line 5), and an override (line 11) of the base policy's
# final rule ``secrets``.
BAD = """policy_name: acme_ml
org: acme
team: ml
rules:
  - type: telepathy
---
policy_name: acme_dev
org: acme
environment: dev
rules:
  - type: content_filter
    id: secrets
    keywords: [x]
"""
