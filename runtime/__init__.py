"""The bottom layer: what every process of the desk runs on, whatever app it serves.

Redis clients and the channel layer built on them (redis_client, channel_layer), group events
sent after commit (broadcast), database hops from async code (aio), cancellation that redis-py
loses (cancellation), presence by heartbeats (heartbeats), the customer's address behind
proxies (client_ip), Daphne's bounded WebSocket protocol (wsframes), start-up objects out of
the garbage collector's way (startup_objects), and the Redis `make run` started (stack_redis).

Nothing here imports cs_site, chat, agents or inference_worker
(tests/operations/test_import_direction.py checks): settings are read through
django.conf.settings, and what a piece needs from an app is passed in. So every layer may
import it, and it can be read and tested on its own.
"""
