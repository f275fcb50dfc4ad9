"""``wsgate bench``: a WebSocket load generator (what thor, tcpkali or k6 do).

picows (compiled) on uvloop in several processes, so the generator is not the bottleneck.
"""
