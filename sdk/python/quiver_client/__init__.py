"""Python client for Quiver, over the gRPC stubs generated from proto/ at build time.

    from quiver_client import Client, NotFound

    with Client("127.0.0.1:7070") as db:
        db.create_collection("docs", dim=4, metric="cosine", if_not_exists=True)
        db.upsert("docs", [(1, [0.1, 0.2, 0.3, 0.4], {"lang": "en"})], wait=True)
        for hit in db.search("docs", [0.1, 0.2, 0.3, 0.4], k=5, filter="lang = 'en'"):
            print(hit.id, hit.distance, hit.payload)

See sdk/python/README.md, and the docstrings of :class:`Client`.
"""
from .client import (DEFAULT_MAX_MESSAGE_BYTES, MAX_BATCH_QUERIES, MAX_IDS_PER_REQUEST,
                     MAX_POINTS_PER_REQUEST, Client)
from .errors import (AlreadyExists, DeadlineExceeded, FailedPrecondition, InvalidArgument,
                     NotFound, QuiverError, ResourceExhausted, Unavailable)
from .models import CollectionInfo, Member, NodeStatus, Point, ScoredPoint, WriteResult

__version__ = "0.1.0"

__all__ = [
    "Client", "QuiverError", "NotFound", "InvalidArgument", "AlreadyExists", "Unavailable",
    "ResourceExhausted", "DeadlineExceeded", "FailedPrecondition", "CollectionInfo", "Point",
    "ScoredPoint", "WriteResult", "NodeStatus", "Member", "MAX_POINTS_PER_REQUEST",
    "MAX_IDS_PER_REQUEST", "MAX_BATCH_QUERIES", "DEFAULT_MAX_MESSAGE_BYTES", "__version__",
]
