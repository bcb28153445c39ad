"""The Prometheus fixture really scrapes: a prometheus_client exporter's gauge arrives through the query API."""

from prometheus_client import CollectorRegistry, Gauge, start_http_server


def test_real_prometheus_scrapes_an_exporter(prometheus_factory, free_port):
    registry = CollectorRegistry()
    Gauge("fixture_probe", "a value the test sets", registry=registry).set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus = prometheus_factory([f"127.0.0.1:{port}"])
        result = prometheus.wait_for("fixture_probe", timeout=30)
        assert float(result[0]["value"][1]) == 42
        assert "fixture_probe" in prometheus.series_names()
    finally:
        server.shutdown()
        thread.join(timeout=5)
