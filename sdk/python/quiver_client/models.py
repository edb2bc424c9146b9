"""Plain result types returned by :class:`quiver_client.Client` (dataclasses, no protobuf).

Ids are ``int`` (numeric ids) or ``str`` (UUIDs, lower case). Payloads are dicts of
``str``/``int``/``float``/``bool``/``None``/lists; vectors are lists of floats. Enum values are
short lower-case names (``"l2"``, ``"hnsw-int8"``, ``"ready"``, ``"alive"``, ``"applied"``).
Every type keeps the protobuf message it was built from in ``raw`` (not part of ``repr`` or
equality) for fields this layer does not surface.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

PointId = Union[int, str]

__all__ = ["CollectionInfo", "Point", "ScoredPoint", "WriteResult", "NodeStatus", "Member",
           "PointId"]


@dataclass
class CollectionInfo:
    """A collection's configuration (defaults resolved), status and sizes."""
    name: str
    dim: int
    metric: str                       #: "l2", "cosine" or "dot"
    index: str                        #: "hnsw", "hnsw-int8", "flat", "ivf-flat", "ivf-pq"
    shards: int
    replication: int
    status: str                       #: "creating", "ready", "training", "indexing", ...
    status_message: str = ""
    points_count: int = 0
    indexed_points_count: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    m: Optional[int] = None           #: HNSW parameters (None for other index types)
    ef_construction: Optional[int] = None
    ef_search: Optional[int] = None
    nlist: Optional[int] = None       #: IVF parameters (None for other index types)
    nprobe: Optional[int] = None
    training_sample: Optional[int] = None
    on_disk_payload: bool = False
    created_at_unix_ms: int = 0
    uid: int = 0
    #: create_collection only: False when if_not_exists matched an existing collection.
    created: Optional[bool] = None
    raw: Any = field(default=None, repr=False, compare=False)


@dataclass
class Point:
    """A stored point (get, scroll). ``payload``/``vector`` are None when not requested."""
    id: PointId
    vector: Optional[List[float]] = None
    payload: Optional[Dict[str, Any]] = None
    version: int = 0                  #: log index of the write that last changed the point
    shard_id: int = 0
    raw: Any = field(default=None, repr=False, compare=False)


@dataclass
class ScoredPoint:
    """A search or recommend hit; smaller ``distance`` is closer (see common.proto)."""
    id: PointId
    distance: float
    payload: Optional[Dict[str, Any]] = None
    vector: Optional[List[float]] = None
    version: int = 0
    shard_id: int = 0
    raw: Any = field(default=None, repr=False, compare=False)


@dataclass
class WriteResult:
    """Outcome of an upsert or delete, summed over the requests the client sent for it.

    ``status`` is the weakest over all requests: "applied" (visible to searches; wait=True) or
    "committed" (durable, maybe not yet visible); None when nothing was sent (empty input).
    ``points`` counts points written (upsert) or deleted (delete; for a filter delete only known
    with wait=True, otherwise 0).
    """
    status: Optional[str] = None
    points: int = 0
    requests: int = 0
    operation_ids: List[int] = field(default_factory=list)
    log_index: int = 0                #: highest log index written (pass on for read-your-writes)
    took_us: int = 0                  #: server time, summed over requests
    raw: Any = field(default=None, repr=False, compare=False)  #: the last response


@dataclass
class NodeStatus:
    """The answering process's own view (Cluster.Status)."""
    node_id: str
    version: str
    mode: str                         #: "dev", "node" or "router"
    healthy: bool
    status_message: str = ""
    uptime_ms: int = 0
    started_at_unix_ms: int = 0
    grpc_address: str = ""
    gossip_address: str = ""
    data_dir: str = ""
    members_alive: int = 0
    members_total: int = 0
    collections: int = 0
    meta_leader_id: str = ""
    meta_term: int = 0
    shards_total: int = 0
    shards_leaderless: int = 0
    raw: Any = field(default=None, repr=False, compare=False)


@dataclass
class Member:
    """A cluster member as seen through gossip (Cluster.Members)."""
    id: str
    role: str                         #: "dev", "node" or "router"
    state: str                        #: "alive", "suspect", "dead", "left"
    grpc_address: str = ""
    gossip_address: str = ""
    incarnation: int = 0
    last_update_age_ms: int = 0
    version: str = ""
    draining: bool = False
    is_self: bool = False
    load: Dict[str, Any] = field(default_factory=dict)
    raw: Any = field(default=None, repr=False, compare=False)
