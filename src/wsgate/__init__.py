"""wsgate: a WebSocket gateway you can pip install.

The seed's system in one package: an echo server (``wsgate echo``), a wscat-class client
(``wsgate connect``, ``wsgate listen``), and an nginx-class reverse proxy (``wsgate proxy``).
"""

__version__ = "0.1.0"
