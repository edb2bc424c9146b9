# Observability: the Prometheus registry (node/metrics.c) and the operator HTTP server
# (node/http.c), the latter driven over real TCP sockets on 127.0.0.1.
qv_add_criterion_test(node_metrics SOURCES test_metrics.c LIBS qv_metrics TIMEOUT 120)
qv_add_criterion_test(node_http SOURCES test_http.c LIBS qv_http TIMEOUT 120)
