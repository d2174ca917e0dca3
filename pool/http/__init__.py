"""The HTTP side of the pool: Prometheus ``/metrics``, the JSON API under
``/api/v1`` and the web dashboard, served by the pool's own Twisted process
(see docs/dashboard.md). ``service.build_http`` is called by the wiring
point; nothing here touches the global reactor or the global registry."""
