"""``wsgate proxy``: a WebSocket-aware HTTP/1.1 reverse proxy and load balancer.

Pure modules (config, http1, headers, handshake, balancer, upstreams) hold the rules;
I/O modules (connection, tunnel, pool, server) move the bytes.
"""
