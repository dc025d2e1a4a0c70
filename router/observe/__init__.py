"""Review surfaces: Prometheus metrics, OpenTelemetry traces, budget alerts and the /ui dashboard.

Everything here hangs off one `Observability` object (hub.py) that the chat
handler calls at a few fixed points; each part is optional and costs nothing
when it is switched off.
"""
