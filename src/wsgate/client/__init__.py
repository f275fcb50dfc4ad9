"""``wsgate connect`` and ``wsgate listen``: a wscat-class client."""
