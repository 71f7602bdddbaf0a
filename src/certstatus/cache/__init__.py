"""The cache tier: surrogate keys, purge clients for Varnish and tag-purge CDN APIs, and a
local Varnish for demos, drills and tests."""
