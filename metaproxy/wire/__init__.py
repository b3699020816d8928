"""The Thrift binary protocol at the byte level, and where the HMS API carries locations.

:mod:`metaproxy.wire.binary` walks messages without decoding them; :mod:`metaproxy.wire.schema`
derives from Hive 4's IDL which fields hold storage locations. Nothing here knows about
sockets or rewrite rules.
"""
